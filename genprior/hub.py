"""Publishing to the Hugging Face hub: a synthetic set, a prior or a trained generator, with a card.

``push(folder, repo_id)`` recognises what the folder holds, copies it with a ``README.md``
card (method, prior, data, IPC, the evaluations the folder holds, the command that made
it, the license) into a staging folder and uploads that: synthetic sets as hub datasets,
priors and trained generators as hub models. What was pushed loads back by its id:
``load_synset("owner/name")`` and ``load_prior("owner/name")`` read the local hub cache
first, so a pushed folder also loads offline once cached.

The checks that need no network (the folder, the id, a token, ``HF_HUB_OFFLINE``) run
first, and the hub is probed with a short connection before anything is sent, so an
offline machine fails at once with one line; ``dry_run`` writes the staging folder and
its card without pushing.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union
from urllib.parse import urlparse

from .errors import GenpriorError
from .priors.base import PRIOR_CARD
from .synset import META_FILE, load_synset

#: what the hub calls each kind of folder
REPO_TYPES = {"synset": "dataset", "prior": "model", "generator": "model"}
CARD = "README.md"
PROBE_TIMEOUT_S = 5.0


def is_hub_id(ref: str) -> bool:
    """``owner/name``: two non-empty parts, not a path."""
    parts = str(ref).split("/")
    return len(parts) == 2 and all(parts) and not str(ref).startswith((".", "/", "~"))


def folder_kind(folder: Path) -> Tuple[str, Dict[str, Any]]:
    """What ``folder`` holds: ``synset`` (its meta.json), ``generator`` (a prior folder written
    by ``genprior train``) or ``prior`` (a prior folder); with its description."""
    if not folder.is_dir():
        raise GenpriorError(f"{folder} is not a folder; push a synthetic set, a prior or a trained generator folder")
    if (folder / META_FILE).is_file():
        load_synset(folder)  # a broken set fails here, with what is wrong
        return "synset", json.loads((folder / META_FILE).read_text())
    if (folder / PRIOR_CARD).is_file():
        try:
            card = json.loads((folder / PRIOR_CARD).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise GenpriorError(f"{folder / PRIOR_CARD} is not valid JSON ({e}); the prior folder is damaged") from None
        return ("generator" if card.get("trained_by") else "prior"), card
    raise GenpriorError(f"{folder} holds neither a synthetic set ({META_FILE}) nor a prior ({PRIOR_CARD}); "
                        "push the synset/ folder of a run, a prior folder, or RUN/generator of `genprior train`")


def _evaluations(folder: Path) -> List[Dict[str, Any]]:
    """The evaluation reports a set folder holds (``genprior evaluate`` writes them there)."""
    reports = []
    for path in sorted(folder.glob("eval_*.json")):
        try:
            reports.append(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
    return reports


def card_text(kind: str, info: Dict[str, Any], repo_id: str, license: str, folder: Path) -> str:
    """The hub card: YAML front matter (license, library, tags) and what a user needs to judge
    and reuse the folder."""
    tags = ["genprior", "dataset-distillation"] + (["synthetic-data"] if kind == "synset" else ["generative-prior"])
    lines = ["---", f"license: {license}", "library_name: genprior", "tags:", *[f"- {t}" for t in tags], "---", ""]
    if kind == "synset":
        config = info.get("config") or {}
        command = (config.get("distill") or {}).get("command") or config.get("command") or ""
        lines += [f"# {repo_id.split('/')[1]}: a synthetic training set made by genprior", "",
                  "| | |", "|---|---|",
                  f"| method | {info.get('method', '?')} |",
                  f"| prior | {info.get('prior', '?')} |",
                  f"| data | {info.get('dataset', '?')} ({info.get('num_classes', '?')} classes, "
                  f"{info.get('resolution', '?')} px, {info.get('channels', '?')} channel(s)) |",
                  f"| images per class (IPC) | {info.get('ipc', '?')} ({info.get('num_images', '?')} images) |",
                  f"| soft labels | {'yes' if info.get('soft_labels') else 'no'} |",
                  f"| made | {info.get('created', '?')} with genprior {(info.get('versions') or {}).get('genprior', '?')} |",
                  f"| command | {f'`{command}`' if command else 'not recorded'} |", ""]
        reports = _evaluations(folder)
        lines += ["## Accuracy", ""]
        if reports:
            lines += ["| protocol | network | accuracy % (mean ± std) | models |", "|---|---|---|---|"]
            for r in reports:
                protocol = (r.get("protocol") or {}).get("name", "?")
                for arch, res in sorted((r.get("results") or {}).items()):
                    lines.append(f"| {protocol} | {arch} | {100 * res['mean']:.2f} ± {100 * res['std']:.2f} | "
                                 f"{len(res.get('accs', []))} |")
        else:
            lines.append("Not evaluated yet: `genprior evaluate DIR` writes a report into the folder.")
        lines += ["", "## Use", "", "```python", "from genprior.synset import load_synset", "",
                  f'synset = load_synset("{repo_id}")  # from the hub, or the local cache offline',
                  "images, labels = synset.images, synset.labels  # normalised with synset.mean / synset.std",
                  "```"]
    else:
        what = ("a generator trained by genprior as the dataset (it decodes sets of any IPC)" if kind == "generator"
                else "a generative prior for genprior")
        rows = [("family", info.get("family")), ("classes", info.get("num_classes")),
                ("resolution", info.get("resolution")), ("channels", info.get("channels")),
                ("method", info.get("method")), ("base prior", info.get("base_prior")),
                ("data", info.get("data") or info.get("dataset")), ("iterations", info.get("trained_iterations")),
                ("command", f"`{info['command']}`" if info.get("command") else None)]
        lines += [f"# {repo_id.split('/')[1]}: {what}", "", "| | |", "|---|---|",
                  *[f"| {k} | {v} |" for k, v in rows if v not in (None, "")], ""]
        quality = folder / "quality.json"
        if quality.is_file():
            lines += ["## Quality", "", "```json", quality.read_text().strip(), "```", ""]
        lines += ["## Use", "", "```bash", f"genprior generate {repo_id} out --ipc 10",
                  f"genprior distill --prior {repo_id}", "```"]
    lines += ["", "## License", "", f"{license}"]
    return "\n".join(lines) + "\n"


def stage(folder: Union[str, os.PathLike], repo_id: str, license: str, out: Union[str, os.PathLike]) -> Path:
    """Copy ``folder`` to ``out`` with its card; returns ``out``."""
    folder, out = Path(folder), Path(out)
    if not is_hub_id(repo_id):
        raise GenpriorError(f"hub repository ids are owner/name, got {repo_id!r}")
    if not license or any(c.isspace() for c in license):
        raise GenpriorError(f"license must be a hub license id such as apache-2.0 or cc-by-4.0, got {license!r}")
    kind, info = folder_kind(folder)
    if out.exists():
        if any(out.iterdir()):
            raise GenpriorError(f"{out} already exists and is not empty; stage into a new folder")
        out.rmdir()
    shutil.copytree(folder, out, ignore=shutil.ignore_patterns(".*", "__pycache__", CARD))
    (out / CARD).write_text(card_text(kind, info, repo_id, license, folder))
    return out


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def _probe(endpoint: str) -> None:
    """Fail at once when the hub's host cannot be reached (no network, a firewall); behind a
    proxy (``HTTPS_PROXY``) the upload itself finds out."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as e:
        raise GenpriorError(f"cannot reach the Hugging Face hub at {endpoint} ({type(e).__name__}); genprior push needs "
                            "the network (--dry-run writes the upload folder and its card without pushing)") from None


def push(folder: Union[str, os.PathLike], repo_id: str, license: str = "apache-2.0", private: bool = False,
         token: Optional[str] = None, dry_run: bool = False,
         stage_dir: Optional[Union[str, os.PathLike]] = None) -> Dict[str, Any]:
    """Upload ``folder`` (a synthetic set, a prior or a trained generator) to ``repo_id`` with a
    card. Returns what was done: the kind, the hub repo type, the staged folder and, when
    pushed, the repository url."""
    import tempfile

    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    kind, _ = folder_kind(folder)
    repo_type = REPO_TYPES[kind]
    if not dry_run:
        if _offline():
            raise GenpriorError("genprior push needs the network, and HF_HUB_OFFLINE is set; unset it where the hub "
                                "is reachable (--dry-run writes the upload folder and its card without pushing)")
        token = token or get_token()
        if not token:
            raise GenpriorError("no Hugging Face token: log in with `hf auth login` or set HF_TOKEN "
                                "(--dry-run writes the upload folder and its card without pushing)")
        _probe(constants.ENDPOINT)
    temporary = None if stage_dir else Path(tempfile.mkdtemp(prefix="genprior-push-"))
    staged = stage(folder, repo_id, license, stage_dir or temporary / "upload")
    result: Dict[str, Any] = {"kind": kind, "repo_type": repo_type, "staged": str(staged), "repo_id": repo_id}
    if dry_run:
        return result
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(staged), repo_id=repo_id, repo_type=repo_type,
                          commit_message=f"genprior push: {kind} from {folder.name}")
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", "?")
        raise GenpriorError(f"the hub refused the push to {repo_id} (HTTP {status}): check the token's write access "
                            "and the repository owner") from None
    except Exception as e:  # the HTTP client's own errors (connection, timeout) are not OSErrors
        raise GenpriorError(f"the push to {repo_id} failed on the network ({type(e).__name__}); run it again") from None
    if temporary is not None:  # pushed: the copy made for the upload goes
        shutil.rmtree(temporary, ignore_errors=True)
        result["staged"] = None
    result["url"] = str(url)
    return result


def download(repo_id: str, repo_type: str, patterns: List[str], what: str) -> Path:
    """A hub repository's snapshot: from the local cache when it is there, else from the hub;
    one-line errors that say how to get it where there is no network."""
    from contextlib import suppress

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    with suppress(LocalEntryNotFoundError):  # not cached yet: try the hub below
        return Path(snapshot_download(repo_id, repo_type=repo_type, allow_patterns=patterns, local_files_only=True))
    flag = "" if repo_type == "model" else f" --repo-type {repo_type}"
    how = (f"download it where there is network (`hf download {repo_id}{flag}`) and copy the cache ($HF_HOME), "
           "or pass the local folder")
    if _offline():
        raise GenpriorError(f"hub {what} {repo_id!r} is not in the local cache and HF_HUB_OFFLINE is set; {how}")
    try:
        return Path(snapshot_download(repo_id, repo_type=repo_type, allow_patterns=patterns, etag_timeout=10))
    except RepositoryNotFoundError:
        raise GenpriorError(f"no hub repository {repo_id!r} (or it is private); check the id") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        raise GenpriorError(f"hub {what} {repo_id!r} is not cached and the hub is unreachable ({type(e).__name__}); "
                            f"{how}") from None
