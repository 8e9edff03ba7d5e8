"""Developer tools beside the cen_perception node, not installed on a robot.

The rig that starts the node and talks to it over DDS (``rig``: the benchmarks, the demo,
``cen-train gpu-check`` and the tests), the node benchmark (``node_bench``,
``cen-perception-bench``), the middleware check (``transport_check``,
``cen-perception-transport-check``), and the project's synthetic world (``synthetic_world``,
also what ``cen-train synth`` draws) with its recorded sequence (``synthetic_sequence``).
"""
