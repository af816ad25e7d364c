"""The local model store: catalog models pulled, checked, carried to offline servers.

``<root>/<id>/`` holds one pulled model, ready to serve, with
``dauys_manifest.json`` (source and commit, licence, the catalog entry, and the
sha256 and size of every file) and ``dauys_model_card.md`` (source, licence,
figures).  The root defaults to ``<asr.cache_dir>/catalog`` (``models.dir``).

:meth:`ModelStore.pull` downloads with huggingface_hub at the catalog's pinned
revision (resumable: an interrupted file continues from where it stopped, in
the same run or the next, with a Range request), checks every file against the hub's own digest
(sha256 for LFS files, the git blob id for the others), converts transformers
Whisper checkpoints to CTranslate2 (:func:`models.finetune.convert.export_ct2`),
and moves the finished directory into place in one rename: a model directory
is either complete or absent.  Work in progress lives in ``<root>/.staging``.
:meth:`pack` and :meth:`unpack` carry models to a server with no internet as
one tar file, verified on both ends.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fnmatch
import hashlib
import json
import logging
import os
import shutil
import tarfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from models.catalog import CATALOG_PREFIX, NOT_STATED, Catalog, CatalogEntry, load_catalog
from models.errors import ModelError

log = logging.getLogger("dauys.models")

MANIFEST = "dauys_manifest.json"
CARD = "dauys_model_card.md"
STAGING = ".staging"
PACK_DIR = "dauys-models"
PACK_INDEX = "PACK.json"
_BLOCK = 1 << 22


class StoreError(ModelError):
    """A pull, check, pack or unpack failed; the message is one line and names the fix."""


class NotPulledError(StoreError):
    pass


class OfflineError(StoreError):
    pass


class LicenceError(StoreError):
    pass


class IntegrityError(StoreError):
    pass


def default_root(cache_dir: str | Path) -> Path:
    return Path(cache_dir).expanduser() / "catalog"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def git_blob_id(path: Path) -> str:
    """The git object id of a file (what the hub lists for files not stored in LFS)."""
    h = hashlib.sha1()
    h.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def offline_hint(model_id: str) -> str:
    return (f"on a server without internet, carry it from a connected machine: `dauys models pack {model_id} -o models.tar` "
            "there, `dauys models unpack models.tar` here")


def default_quantization(device: str = "auto") -> str:
    """int8 on the CPU; int8_float16 on CUDA (what a converted model is stored as)."""
    if device == "auto":
        try:
            import ctranslate2

            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        except Exception:  # no CUDA runtime at all
            device = "cpu"
    return "int8_float16" if device == "cuda" else "int8"


@dataclass
class Installed:
    id: str
    path: Path
    manifest: dict


@dataclass
class ModelStore:
    root: Path
    catalogs: tuple[str | Path, ...] = ()
    endpoint: str | None = None
    """Hub endpoint (a mirror); None = huggingface_hub's (HF_ENDPOINT or huggingface.co)."""
    token: str | None = None
    _catalog: Catalog | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser()
        self.catalogs = tuple(self.catalogs)

    @classmethod
    def from_settings(cls, models_settings, cache_dir: str | Path) -> ModelStore:
        """From the ``[models]`` settings (``dir``, ``catalogs``, ``endpoint``); None-safe."""
        root = getattr(models_settings, "dir", None) or default_root(cache_dir)
        return cls(root, tuple(getattr(models_settings, "catalogs", ()) or ()), getattr(models_settings, "endpoint", "") or None)

    # -- the catalog and what is installed -------------------------------------------------
    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = load_catalog(self.catalogs)
        return self._catalog

    def entry(self, model_id: str) -> CatalogEntry:
        return self.catalog.get(model_id)

    def model_dir(self, model_id: str) -> Path:
        return self.root / model_id.removeprefix(CATALOG_PREFIX)

    def manifest(self, model_id: str) -> dict | None:
        path = self.model_dir(model_id) / MANIFEST
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def installed(self) -> list[Installed]:
        if not self.root.is_dir():
            return []
        out = []
        for d in sorted(self.root.iterdir()):
            if d.is_dir() and not d.name.startswith("."):
                m = self.manifest(d.name)
                if m is not None:
                    out.append(Installed(d.name, d, m))
        return out

    def path_for(self, ref: str, kind: str | None = None) -> Path:
        """What a setting that names ``catalog:<id>`` points at: the model directory, or a Piper voice's .onnx."""
        model_id = ref.removeprefix(CATALOG_PREFIX)
        manifest = self.manifest(model_id)
        if manifest is None:
            entry = self.catalog.entries.get(model_id)
            if entry is None:
                raise NotPulledError(f"{CATALOG_PREFIX}{model_id} is neither in the model catalog nor pulled into {self.root}: `dauys models list` shows the ids")
            raise NotPulledError(
                f"{CATALOG_PREFIX}{model_id} is not pulled into {self.root}: run `dauys models pull {model_id}` on a connected machine; "
                + offline_hint(model_id)
            )
        got = manifest.get("kind")
        if kind is not None and got != kind:
            raise StoreError(f"{CATALOG_PREFIX}{model_id} is a {got} model, not {kind}")
        voice = (manifest.get("entry") or {}).get("voice_file")
        return self.model_dir(model_id) / Path(voice).name if voice else self.model_dir(model_id)

    # -- pull ---------------------------------------------------------------------------------
    def pull(self, model_id: str, *, accept_licence: list[str] | tuple[str, ...] = (), quantization: str | None = None,
             device: str = "auto", force: bool = False) -> Path:
        """Download (and convert) one catalog model into the store; returns its directory."""
        entry = self.entry(model_id)
        if not entry.downloadable:
            raise StoreError(f"{entry.id} ships with Dauys ({entry.source.embedded}): nothing to pull; use {entry.ref} as it is")
        if not entry.licence_accepted(accept_licence):
            name = entry.license if entry.license.lower() != NOT_STATED else entry.id
            raise LicenceError(
                f"{entry.id}: licence {entry.licence_line()}; {entry.license_note or 'read its model card'}. "
                f"Pull it only if your use is allowed: `dauys models pull {entry.id} --accept-licence {name}`"
            )
        target = self.model_dir(entry.id)
        if not force and self.manifest(entry.id) is not None:
            log.info("%s is already pulled into %s (--force pulls it again)", entry.id, target)
            return target
        quant = quantization or default_quantization(device)
        api = self._api()
        commit, files = self._list(api, entry.source.hub, entry.source.revision, entry.source.files, entry.id)
        staging = self.root / STAGING / f"{entry.id}-{commit[:12]}"
        for stale in (self.root / STAGING).glob(f"{entry.id}-*"):
            if stale != staging and stale.name[len(entry.id) + 1:].isalnum():  # an earlier commit's partial download
                shutil.rmtree(stale, ignore_errors=True)
        download = staging / "download"
        try:
            for f in files:
                self._fetch(entry.source.hub, commit, f, download, entry.id)
            if entry.source.tokenizer_from:
                self._fetch_tokenizer(api, entry, download)
            out = staging / "out"
            shutil.rmtree(out, ignore_errors=True)
            self._build(entry, download, out, quant)
            self._finish(entry, out, commit, quant if entry.format == "transformers-whisper" else None)
            self._install(out, target)
        except IntegrityError:
            shutil.rmtree(staging, ignore_errors=True)  # damaged downloads are not resumed
            raise
        except (OfflineError, KeyboardInterrupt):
            raise  # the partial files stay in .staging: the next pull resumes them
        except BaseException:
            shutil.rmtree(staging / "out", ignore_errors=True)
            raise
        shutil.rmtree(staging, ignore_errors=True)
        log.info("pulled %s into %s", entry.id, target)
        return target

    def _api(self):
        try:
            from huggingface_hub import HfApi
        except ImportError:  # pragma: no cover - a base dependency
            raise StoreError("huggingface_hub is not installed: pip install huggingface_hub") from None
        return HfApi(endpoint=self.endpoint, token=self.token)

    def _list(self, api, repo: str, revision: str, patterns: list[str], model_id: str):
        from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
        from huggingface_hub.hf_api import RepoFile

        where = f"{repo}@{revision}"
        try:
            info = api.model_info(repo, revision=revision)
            commit = info.sha
            tree = [f for f in api.list_repo_tree(repo, revision=commit, recursive=True) if isinstance(f, RepoFile)]
        except GatedRepoError:
            raise StoreError(f"{where} is gated: accept its conditions on the hub and set HF_TOKEN, then pull again") from None
        except RevisionNotFoundError:
            raise StoreError(f"{where}: the revision does not exist on the hub (fix the catalog entry {model_id})") from None
        except RepositoryNotFoundError:
            raise StoreError(f"{where}: no such repository on the hub (or it is private: set HF_TOKEN)") from None
        except HfHubHTTPError as e:
            raise StoreError(f"{where}: the hub answered {_status(e)}: try again later") from None
        except Exception as e:  # connection refused, DNS, timeouts, offline mode: many types
            raise OfflineError(f"cannot reach the model hub for {where} ({_why(e)}); " + offline_hint(model_id)) from None
        if not commit:
            raise StoreError(f"{where}: the hub did not say which commit it serves")
        wanted = [f for f in tree if not patterns or any(fnmatch.fnmatch(f.path, p) for p in patterns)]
        if not wanted:
            raise StoreError(f"{where} has no file matching {', '.join(patterns)} (fix the catalog entry {model_id})")
        return commit, wanted

    def _fetch(self, repo: str, commit: str, f, download: Path, model_id: str) -> Path:
        """One file into ``download``, resumable across runs, checked against the hub's digest before it is kept.

        Bytes arrive in ``<file>.part``: huggingface_hub's ``http_get`` continues it with a Range request
        (after a dropped connection in this run, or what an earlier run left), shows a progress bar and
        retries transient errors; the finished file is checked, then renamed to its name."""
        from huggingface_hub import hf_hub_url
        from huggingface_hub.errors import HfHubHTTPError
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers

        rel = PurePosixPath(f.path)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise IntegrityError(f"{repo}: refusing the file name {f.path!r} the hub listed")
        final = download / f.path
        if final.is_file():  # checked when it was kept
            return final
        part = final.with_name(final.name + ".part")
        part.parent.mkdir(parents=True, exist_ok=True)
        size = f.lfs.size if getattr(f, "lfs", None) is not None else f.size
        resume = part.stat().st_size if part.is_file() else 0
        if resume > size:
            part.unlink()
            resume = 0
        url = hf_hub_url(repo, f.path, revision=commit, endpoint=self.endpoint)
        try:
            with open(part, "ab") as out:
                http_get(url, out, resume_size=resume, headers=build_hf_headers(token=self.token), expected_size=size, displayed_filename=f.path)
        except HfHubHTTPError as e:
            if getattr(e, "response", None) is not None:
                raise StoreError(f"{repo}/{f.path}: the hub answered {_status(e)}") from None
            raise OfflineError(f"download of {repo}/{f.path} failed ({_why(e)}); run the pull again to resume, or " + offline_hint(model_id)) from None
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT):
                raise StoreError(f"cannot write {part}: {e.strerror}") from None
            if "Consistency check" in str(e):
                part.unlink(missing_ok=True)
                raise IntegrityError(f"{repo}/{f.path}: the hub sent a different size than it lists ({_why(e)}); pull again") from None
            raise OfflineError(f"download of {repo}/{f.path} failed ({_why(e)}); run the pull again to resume, or " + offline_hint(model_id)) from None
        except Exception as e:  # httpx transport errors after huggingface_hub's own retries
            raise OfflineError(f"download of {repo}/{f.path} failed ({_why(e)}); run the pull again to resume, or " + offline_hint(model_id)) from None
        lfs = getattr(f, "lfs", None)
        if lfs is not None and getattr(lfs, "sha256", None):
            want, got, what = lfs.sha256, sha256_file(part), "sha256"
        elif getattr(f, "blob_id", None):
            want, got, what = f.blob_id, git_blob_id(part), "git blob id"
        else:
            want = got = what = ""
        if want and got != want:
            part.unlink(missing_ok=True)
            raise IntegrityError(f"{repo}/{f.path} is corrupt: {what} {got[:12]}..., the hub lists {want[:12]}...; nothing was installed, pull again")
        os.replace(part, final)
        return final

    def _fetch_tokenizer(self, api, entry: CatalogEntry, download: Path) -> None:
        repo, _, rev = entry.source.tokenizer_from.partition("@")
        need = [n for n in ("tokenizer.json", "preprocessor_config.json") if not (download / n).is_file()]
        if not need:
            return
        commit, files = self._list(api, repo, rev or "main", need, entry.id)
        for f in files:
            self._fetch(repo, commit, f, download, entry.id)

    def _build(self, entry: CatalogEntry, download: Path, out: Path, quantization: str) -> None:
        if entry.format == "transformers-whisper":
            try:
                from models.finetune.convert import export_ct2
            except ImportError as e:  # pragma: no cover
                raise StoreError(f"converting {entry.id} needs {e.name}: pip install 'dauys[finetune]'") from None
            card = {"name": entry.name, "base_model": f"{entry.source.hub}@{entry.source.revision}", "languages": entry.languages}
            try:
                export_ct2(download, out, quantization, card, verify=True)
            except ImportError as e:
                raise StoreError(f"converting {entry.id} to CTranslate2 needs {e.name}: pip install 'dauys[finetune]' (or pull on a machine that has it and carry it with pack/unpack)") from None
            except (ValueError, FileNotFoundError) as e:
                raise StoreError(f"{entry.id}: conversion to CTranslate2 failed: {str(e).splitlines()[0]}") from None
            return
        out.mkdir(parents=True)
        for src in sorted(p for p in download.rglob("*") if p.is_file() and ".cache" not in p.relative_to(download).parts):
            rel = src.relative_to(download)
            dst = out / (rel.name if entry.format == "piper" else rel)
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst)  # the download stays until the model is installed (a failed build keeps it for the next pull)
            except OSError:
                shutil.copy2(src, dst)
        if entry.format == "ct2-whisper":
            from models.registry import check_local_dir

            check_local_dir(out)
        elif entry.format == "piper":
            voice = out / entry.voice_file
            if not voice.is_file() or not Path(f"{voice}.json").is_file():
                raise StoreError(f"{entry.id}: {entry.voice_file} and its .json were not among the files fetched (fix the catalog entry)")
            try:
                json.loads(Path(f"{voice}.json").read_text(encoding="utf-8"))["audio"]["sample_rate"]
            except (ValueError, KeyError, TypeError):
                raise StoreError(f"{entry.id}: {entry.voice_file}.json is not a Piper voice config") from None

    def _finish(self, entry: CatalogEntry, out: Path, commit: str, quantization: str | None) -> None:
        from models import __version__

        (out / CARD).write_text(model_card_text(entry, commit, quantization), encoding="utf-8")
        manifest = {
            "id": entry.id,
            "kind": entry.kind,
            "format": entry.format,
            "source": {"hub": entry.source.hub, "revision": entry.source.revision, "commit": commit},
            "license": entry.license,
            "commercial": entry.commercial,
            "quantization": quantization,
            "pulled": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "dauys": __version__,
            "entry": entry.model_dump(mode="json"),
            "files": _digest_tree(out),
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    def _install(self, ready: Path, target: Path) -> None:
        """Put ``ready`` at ``target`` by renames only (an old copy is moved aside first, then deleted)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        old = None
        if target.exists():
            old = self.root / STAGING / f"old-{target.name}-{uuid.uuid4().hex[:8]}"
            old.parent.mkdir(parents=True, exist_ok=True)
            os.replace(target, old)
        os.replace(ready, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    # -- verify / remove ------------------------------------------------------------------------
    def verify(self, model_id: str) -> list[str]:
        """Problems found (missing, changed or unexpected files); empty = intact."""
        model_id = model_id.removeprefix(CATALOG_PREFIX)
        manifest = self.manifest(model_id)
        if manifest is None:
            return [f"{model_id}: not pulled (no {MANIFEST} in {self.model_dir(model_id)})"]
        return _check_tree(self.model_dir(model_id), manifest, model_id)

    def remove(self, model_id: str) -> Path:
        target = self.model_dir(model_id)
        if not target.is_dir():
            raise NotPulledError(f"{model_id} is not pulled into {self.root}")
        trash = self.root / STAGING / f"removed-{target.name}-{uuid.uuid4().hex[:8]}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.replace(target, trash)  # gone from the store at once, deleted after
        shutil.rmtree(trash, ignore_errors=True)
        return target

    # -- pack / unpack ----------------------------------------------------------------------------
    def pack(self, model_ids: list[str], out: str | Path) -> Path:
        """One tar file with the models (each with its manifest) and an index, for an air-gapped server."""
        from models import __version__

        out = Path(out)
        ids = [m.removeprefix(CATALOG_PREFIX) for m in model_ids]
        if not ids:
            raise StoreError("name the models to pack (`dauys models list` shows the pulled ones)")
        for mid in ids:
            problems = self.verify(mid)
            if problems:
                raise StoreError(f"cannot pack {mid}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        index = {"format": 1, "dauys": __version__, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                 "models": {mid: self.manifest(mid) for mid in ids}}
        tmp = out.with_name(out.name + ".partial")
        try:
            with tarfile.open(tmp, "w") as tar:
                data = (json.dumps(index, indent=2, ensure_ascii=False) + "\n").encode()
                info = tarfile.TarInfo(f"{PACK_DIR}/{PACK_INDEX}")
                info.size, info.mode, info.mtime = len(data), 0o644, int(_dt.datetime.now().timestamp())
                import io

                tar.addfile(info, io.BytesIO(data))
                for mid in ids:
                    tar.add(self.model_dir(mid), arcname=f"{PACK_DIR}/{mid}", filter=_clean_member)
            os.replace(tmp, out)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return out

    def unpack(self, archive: str | Path, *, force: bool = False) -> list[str]:
        """Install every model of a pack made by :meth:`pack`, each verified against its manifest first."""
        archive = Path(archive)
        if not hasattr(tarfile, "data_filter"):  # pragma: no cover - Python 3.11.0-3.11.3
            raise StoreError("unpacking safely needs Python 3.11.4 or later (tarfile's data filter)")
        staging = self.root / STAGING / f"unpack-{uuid.uuid4().hex[:8]}"
        try:
            try:
                tar = tarfile.open(archive, "r:*")
            except (OSError, tarfile.TarError) as e:
                raise StoreError(f"{archive} is not a model pack: {e}") from None
            with tar:
                members = tar.getmembers()
                for m in members:
                    _check_member(m, archive)
                staging.mkdir(parents=True)
                try:
                    tar.extractall(staging, members=members, filter="data")
                except (tarfile.TarError, OSError) as e:
                    raise StoreError(f"{archive}: {e}") from None
            base = staging / PACK_DIR
            try:
                index = json.loads((base / PACK_INDEX).read_text(encoding="utf-8"))
                ids = list(index["models"])
            except (OSError, ValueError, KeyError, TypeError):
                raise StoreError(f"{archive} has no valid {PACK_DIR}/{PACK_INDEX}: not a pack made by `dauys models pack`") from None
            for mid in ids:
                d = base / mid
                try:
                    manifest = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    raise StoreError(f"{archive}: {mid} has no {MANIFEST}") from None
                if manifest != index["models"][mid]:
                    raise IntegrityError(f"{archive}: the manifest of {mid} differs from the pack's index")
                problems = _check_tree(d, manifest, mid)
                if problems:
                    raise IntegrityError(f"{archive}: {problems[0]}; nothing was installed")
            for mid in ids:
                if self.manifest(mid) is not None and not force:
                    log.info("%s: replacing the copy already in %s", mid, self.root)
                self._install(base / mid, self.model_dir(mid))
            return ids
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _status(e: Exception) -> str:
    resp = getattr(e, "response", None)
    code = getattr(resp, "status_code", None)
    return f"HTTP {code}" if code else type(e).__name__


def _why(e: BaseException) -> str:
    first = str(e).splitlines()[0].strip() if str(e).strip() else ""
    return f"{type(e).__name__}: {first}"[:200] if first else type(e).__name__


def _digest_tree(root: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            out[p.relative_to(root).as_posix()] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    return out


def _check_tree(root: Path, manifest: dict, model_id: str) -> list[str]:
    problems = []
    files = manifest.get("files") or {}
    for rel, meta in files.items():
        p = root / rel
        if not p.is_file():
            problems.append(f"{model_id}: {rel} is missing")
        elif p.stat().st_size != meta.get("size") or sha256_file(p) != meta.get("sha256"):
            problems.append(f"{model_id}: {rel} has changed (sha256 differs from the manifest)")
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST and p.relative_to(root).as_posix() not in files:
            problems.append(f"{model_id}: {p.relative_to(root).as_posix()} is not in the manifest")
    return problems


def _clean_member(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _check_member(m: tarfile.TarInfo, archive: Path) -> None:
    p = PurePosixPath(m.name)
    if p.is_absolute() or ".." in p.parts or not p.parts or p.parts[0] != PACK_DIR:
        raise StoreError(f"{archive}: refusing member {m.name!r} (outside {PACK_DIR}/): not a pack made by `dauys models pack`")
    if not (m.isfile() or m.isdir()):
        raise StoreError(f"{archive}: refusing member {m.name!r} (links and special files are not allowed in a model pack)")


def model_card_text(entry: CatalogEntry, commit: str = "", quantization: str | None = None) -> str:
    """The model card written beside a pulled model: where it came from, its licence and quoted figures."""
    lines = [f"# {entry.name}", "", f"Catalog id `{entry.id}` ({entry.kind}); use it as `{entry.ref}`.", "",
             "| | |", "| --- | --- |"]
    if entry.source.hub:
        lines.append(f"| source | https://huggingface.co/{entry.source.hub} at `{entry.source.revision}`" + (f" (commit `{commit}`)" if commit else "") + " |")
    lines.append(f"| format | {entry.format}; {entry.conversion or 'as published'} |")
    if quantization:
        lines.append(f"| quantization | {quantization} |")
    lines += [f"| languages | {', '.join(entry.languages)} |", f"| size | {entry.size} |", f"| licence | {entry.licence_line()} |"]
    if entry.license_note:
        lines.append(f"| licence note | {entry.license_note} |")
    lines += ["", "## Figures quoted from the model card", ""]
    if entry.figures:
        lines += ["| metric | value | test set | language | source |", "| --- | ---: | --- | --- | --- |"]
        lines += [f"| {f.metric} | {f.value:g} % | {f.test_set} | {f.language} | {f.quoted_from} |" for f in entry.figures]
    else:
        lines.append("None stated.")
    if entry.note:
        lines += ["", entry.note]
    return "\n".join(lines) + "\n"


def default_cache_dir() -> Path:
    """Dauys's cache (``asr.cache_dir``'s default): ``$XDG_CACHE_HOME/dauys`` or ``~/.cache/dauys``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dauys"


def model_store(section) -> ModelStore:
    """The store a settings section (asr, tts, dialogue) was given from the ``[models]`` settings,
    or the default one (``<asr.cache_dir or the default cache>/catalog``) for a section made on its own."""
    store = getattr(section, "_store", None)
    if isinstance(store, ModelStore):
        return store
    return ModelStore(default_root(getattr(section, "cache_dir", None) or default_cache_dir()))


def lookup_entry(store: ModelStore, ref: str) -> CatalogEntry | None:
    """The catalog entry of ``catalog:<id>``: from the catalog, else from a pulled copy's manifest (a pack from another catalog)."""
    model_id = ref.removeprefix(CATALOG_PREFIX)
    entry = store.catalog.entries.get(model_id)
    if entry is not None:
        return entry
    manifest = store.manifest(model_id)
    if manifest and manifest.get("entry"):
        try:
            return CatalogEntry.model_validate(manifest["entry"])
        except ValueError:
            return None
    return None
