"""SGLang-compatible simulator: HTTP server, continuous-batching engine and timing model.

``python -m sglbench.sim`` takes ``sglang.launch_server``'s flags (plus ``--sim-*``) and answers
SGLang's HTTP API, so the real bench client and the real PD routers run against it on a machine
without a GPU. Layout (imports point down):

    cli.py          flags -> SimArgs (validated; one-line errors, exit 2)
    server.py       aiohttp app, native endpoints, lifecycle      info.py / metrics.py: bodies
    openai_api.py   /v1/models, /v1/completions, /v1/chat/completions
    protocol.py     request parsing shared by both APIs
    service.py      one request's path: role (agg / prefill / decode), faults, trace
    bootstrap.py    PD hand-over over HTTP on the prefill's bootstrap port
    tokenizer.py    real token counts and real detokenized output (offline Qwen2.5 tokenizer)
    engine.py       continuous-batching scheduler with modelled step times (batching.py: SGLang's
                    admission/retraction rules; sequence.py: per-request state and streams)
    timing.py       physical step-time model (what it captures and not)   profiles.py: data
    resources.py    one GPU shared by two servers, the KV link shared by transfers
    vclock.py       virtual-clock event loop      workload.py: the bench client's draws
    topology.py     agg xN, xPyD, pd_intra        replay.py: a point through engines, no HTTP
    points.py       measured JSONL rows -> points   calibrate.py / predict.py: fit, what-if
    reference.py    the shipped profiles' fit on reference-results    tables.py: CLI tables
"""
