"""SGLang-compatible simulator: HTTP server, continuous-batching engine and timing model.

``python -m sglbench.sim`` takes ``sglang.launch_server``'s flags (plus ``--sim-*``) and answers
SGLang's HTTP API, so the real bench client and the real PD routers run against it on a machine
without a GPU. Importing this package imports nothing else. Layout, bottom first (a module
imports only modules above it in this list):

    config.py       SimArgs, the flag parser, profile names: stdlib only (the harness's leaf)
    profiles.py     GPU + model data       timing.py: physical step-time model
    engine_types.py, sequence.py, engine.py: continuous-batching scheduler with modelled steps
    tokenizer.py    real token counts and real detokenized output (offline Qwen2.5 tokenizer)
    bootstrap.py    PD hand-over over HTTP on the prefill's bootstrap port
    service.py      one request's path: role (agg / prefill / decode), faults, trace
    protocol.py     request parsing and validation shared by both APIs
    stream.py       the one SSE stream loop both APIs use (and non-streaming collection)
    info.py / metrics.py: /server_info, /model_info and /metrics bodies
    native_api.py   /generate, health, info, /flush_cache, /metrics
    openai_format.py  OpenAI stream chunks and error bodies, byte for byte as SGLang writes them
    openai_api.py   /v1/models, /v1/completions, /v1/chat/completions
    server.py       the aiohttp application and its lifecycle
    cli.py          ``main``: parse, serve, one-line errors (``__main__.py`` calls it)
    engine.py       continuous-batching scheduler with modelled step times (batching.py: SGLang's
                    admission/retraction rules; sequence.py: per-request state and streams)
    timing.py       physical step-time model (what it captures and not)   profiles.py: data
    resources.py    one GPU shared by two servers, the KV link shared by transfers
    vclock.py       virtual-clock event loop      workload.py: the bench client's draws
    topology.py     agg xN, xPyD, pd_intra        replay.py: a point through engines, no HTTP
    points.py       measured JSONL rows -> points   calibrate.py / predict.py: fit, what-if
    reference.py    the shipped profiles' fit on reference-results    tables.py: CLI tables
"""
