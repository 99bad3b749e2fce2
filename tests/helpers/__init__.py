"""Helpers the tests share: processes and servers, training runs, shards, plain-Python references, the builders
behind the shared fixtures. Test files import from here, never from each other."""
