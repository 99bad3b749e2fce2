"""A Ray job for the ray_cluster.sh test: one task pinned to each node; writes what the cluster looks like."""

import json
import socket
import sys

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote(num_cpus=1)
def where() -> str:
    return ray.get_runtime_context().get_node_id()


def main(out: str) -> None:
    ray.init()  # the job's RAY_ADDRESS
    nodes = [n for n in ray.nodes() if n["Alive"]]
    ran_on = ray.get([where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                      .remote() for n in nodes])
    with open(out, "w") as f:
        json.dump({"nodes": [n["NodeID"] for n in nodes], "ran_on": ran_on,
                   "cpus": ray.cluster_resources().get("CPU", 0), "host": socket.gethostname()}, f)


if __name__ == "__main__":
    main(sys.argv[1])
