"""Plan stage: pure builders from ``Settings`` to plain data, never touching the network.

``servers`` (launch_server argv per worker), ``router`` (the PD router's argv), ``bench`` (the
bench client's flags), ``sweep`` (points, tags, the shared workload), ``modes`` (what a compare
run measures), ``container`` (the docker container of a server), ``client`` (the bench client's
tokenizer flag and environment, from local files only). ``--dry-run`` prints these.
"""
