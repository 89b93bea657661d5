"""What SGLang's bench client needs besides its flags: a tokenizer and an environment.

Offline: with ``BENCH_DATASET=random`` (or sharegpt) and no ``BENCH_DATASET_PATH`` the client
samples ShareGPT from the HF hub; when it is not in the local HF cache this is a ConfigError up
front (no network probe: tests and air-gapped hosts must not reach out); a dry run prints it as
a ``# warning:`` line with the commands instead. The tokenizer is TOKENIZER_PATH, else the
simulator's offline tokenizer when SIMULATE=true, else the model's (the client asks the
server's /model_info). ``HF_HUB_OFFLINE=1`` is set for the client whenever the dataset and the
tokenizer are both local or cached, so it never waits on the hub; otherwise the environment is
left as it is and a hub failure becomes a BenchError naming TOKENIZER_PATH.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sglbench.errors import ConfigError
from sglbench.plan.workload import workload_notes
from sglbench.plan.workload_checks import check_workload
from sglbench.settings import Settings
from sglbench.sim.config import DEFAULT_TOKENIZER_DIR, tokenizer_ready

SHAREGPT_REPO = "anon8231489123/ShareGPT_Vicuna_unfiltered"
SHAREGPT_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"


@dataclass(frozen=True)
class ClientSetup:
    """What the client needs besides ``bench_args``: a tokenizer flag and environment."""

    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)  # may hold HF_TOKEN: never print it
    offline: bool = False
    tokenizer_local: bool = True
    tokenizer: str = ""  # what the client loads: a directory or a hub id

    def shown_env(self) -> str:
        """Environment prefix for a shell line, secrets left out."""
        return "HF_HUB_OFFLINE=1 " if self.offline else ""



def _hub_cached(repo_id: str, filename: str, repo_type: str = "model") -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, repo_type=repo_type)
    return isinstance(found, str)


def _dataset_local(settings: Settings) -> bool:
    """True (or ConfigError): the client will not need the hub for its dataset."""
    if settings.bench_dataset_path:
        if not Path(settings.bench_dataset_path).expanduser().is_file():
            raise ConfigError(f"BENCH_DATASET_PATH={settings.bench_dataset_path!r}: no such file; "
                              "give a local ShareGPT-style JSON or leave it empty")
        return True
    # generated-shared-prefix builds its prompts from the tokenizer alone.
    if settings.bench_dataset in ("random-ids", "generated-shared-prefix") or _hub_cached(
        SHAREGPT_REPO, SHAREGPT_FILE, "dataset"
    ):
        return True
    raise ConfigError(
        f"BENCH_DATASET={settings.bench_dataset}: SGLang's bench client would download ShareGPT "
        "from the HF hub (not in the local cache); set BENCH_DATASET=random-ids (offline) or "
        "BENCH_DATASET_PATH=<local ShareGPT json>, or fetch it once with `hf download "
        f"--repo-type dataset {SHAREGPT_REPO} {SHAREGPT_FILE}`"
    )


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or Path(name).expanduser().exists()


def _tokenizer(settings: Settings, dry_run: bool) -> tuple[tuple[str, ...], bool]:
    """(extra client args, tokenizer available without the hub)."""
    if settings.tokenizer_path:
        name = settings.tokenizer_path
        if _looks_like_path(name):
            if not Path(name).expanduser().is_dir():
                raise ConfigError(f"TOKENIZER_PATH={name!r}: not a directory on this host; the "
                                  "bench client loads the tokenizer from it")
            return (), True
        return (), _hub_cached(name, "tokenizer_config.json")
    if settings.simulate:
        where = DEFAULT_TOKENIZER_DIR.expanduser()
        # A dry run only shows the path; building the tokenizer writes a cache.
        if not dry_run and not tokenizer_ready(where):
            _build_offline_tokenizer(where)
        return ("--tokenizer", str(where)), True
    model = settings.model_path
    if _looks_like_path(model):
        return (), Path(model).expanduser().is_dir()
    return (), _hub_cached(model, "tokenizer_config.json")


def _build_offline_tokenizer(where: Path) -> None:
    """The simulator's offline tokenizer, built once by the simulator's own module."""
    done = subprocess.run([sys.executable, "-m", "sglbench.sim.tokenizer", str(where)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0 or not tokenizer_ready(where):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"SIMULATE=true: the simulator's offline tokenizer could not be built "
                          f"in {where} ({last}); check that directory is writable")


def client_setup(settings: Settings, *, dry_run: bool = False) -> ClientSetup:
    """Check the client can run here (dataset, tokenizer) and decide its flags and env.

    ``dry_run`` only shows where the simulator's tokenizer would be, without building it.

    Raises:
        ConfigError: the dataset or tokenizer would need the HF hub and is not available.
    """
    extra, tokenizer_local = _tokenizer(settings, dry_run)
    dataset_local = _dataset_local(settings)
    check_workload(settings)  # the dataset file's content and every length against the context
    return _client(settings, dataset_local, extra, tokenizer_local)


def planned_client(settings: Settings) -> tuple[ClientSetup, list[str]]:
    """``client_setup`` for a dry run: never fails; what would stop a real run is returned as
    ``# warning: ...`` lines to print with the commands.
    """
    warnings: list[str] = []
    try:
        dataset_local = _dataset_local(settings)
    except ConfigError as exc:
        warnings.append(f"# warning: {exc}")
        dataset_local = False
    try:
        check_workload(settings)
    except ConfigError as exc:
        warnings.append(f"# warning: {exc}")
    warnings += workload_notes(settings)
    try:
        extra, tokenizer_local = _tokenizer(settings, dry_run=True)
    except ConfigError as exc:
        warnings.append(f"# warning: {exc}")
        extra, tokenizer_local = (), False
    return _client(settings, dataset_local, extra, tokenizer_local), warnings


def _client(settings: Settings, dataset_local: bool, extra: tuple[str, ...],
            tokenizer_local: bool) -> ClientSetup:
    env: dict[str, str] = {}
    offline = dataset_local and tokenizer_local
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    if settings.hf_token is not None:
        env["HF_TOKEN"] = settings.hf_token.get_secret_value()  # gated tokenizers
    name = extra[1] if extra else settings.tokenizer_path or settings.model_path
    return ClientSetup(extra, env, offline, tokenizer_local, name)
