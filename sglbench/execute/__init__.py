"""Execute stage: runtimes, readiness, the router, deployment, the bench client, compare.

``runtime`` is the protocol (``process`` and ``docker`` implement it); ``deploy`` brings a mode
up and down through it; ``router`` is the PD router process; ``bench`` and ``client_worker`` run
SGLang's bench client; ``compare`` orchestrates a run and writes its ``RunRecord``;
``provenance`` gathers versions and server info. Builders (``sglbench.plan``) decide every flag.
"""
