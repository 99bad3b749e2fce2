"""Search engines behind one small interface (base.Engine): Qdrant (embedded Edge shard, or a server/cluster by
URL) for deployment, and the flat exact index, the oracle every engine result is tested against."""
