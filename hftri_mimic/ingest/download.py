"""Credentialed, resumable, checksum-verified mirroring of PhysioNet projects.

docs/RUNNING.md (Downloading from PhysioNet) says how to run it; docs/SECURITY.md lists how credentials are kept.

One PhysioNet project (a base URL such as ``https://physionet.org/files/mimiciv/3.1/``) publishes
``SHA256SUMS.txt`` with one ``<sha256> <relative path>`` line per file. :func:`download_project` fetches
that list, selects files (all of them, those matching ``include`` glob patterns, and/or the relative
paths listed in a ``file_list`` text file) and mirrors each one under ``dest`` with the same relative
layout:

- a transfer writes ``<file>.part`` and, after an interruption, continues it with
  ``Range: bytes=<size>-`` (a ``206`` is appended; a server that answers ``200`` restarts from zero);
- a finished ``.part`` becomes ``<file>`` only when its SHA-256 matches ``SHA256SUMS.txt``; on a
  mismatch the ``.part`` is **deleted** (a rerun starts that file clean) and the error names the file.
  A mismatch after a resumed transfer is retried once from zero before it counts;
- a file already present is kept only when its SHA-256 matches (verified, not trusted by size);
- connection errors, timeouts and HTTP 429/5xx are retried a bounded number of times with
  exponential backoff; 401/403 stop at once with a message that names the host, never the password.

Credentials come from ``PHYSIONET_USERNAME`` + ``PHYSIONET_PASSWORD`` or else ``~/.netrc`` (``$NETRC``
when set) and are sent only as an HTTP basic-auth header: they are never logged, printed, put in a
URL, an error message, the manifest or any file. They go only to the configured project URL's origin (scheme,
host, port): a redirect anywhere else is refused before it is followed. A ``.netrc`` readable by other users, or
owned by another user, is refused. Prefer ``.netrc``: environment variables reach every job Snakemake starts
(and, on a cluster, every batch job), a file with mode 600 only this process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import netrc
import os
import re
import stat
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urljoin, urlsplit

import requests
import urllib3
from tqdm import tqdm

log = logging.getLogger(__name__)

SUMS_NAME = "SHA256SUMS.txt"
ENV_USER = "PHYSIONET_USERNAME"
ENV_PASSWORD = "PHYSIONET_PASSWORD"
CREDENTIAL_HINT = f"check ~/.netrc or {ENV_USER} / {ENV_PASSWORD}"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
MAX_REDIRECTS = 5
# The largest file a configured project holds is MIMIC-IV's icu/chartevents.csv.gz (about 3.3 GB in v3.1); a cap
# well above it stops a server that streams without end before it fills the disk.
DEFAULT_MAX_FILE_GB = 10.0
USER_AGENT = "hftri-mimic-download/0.1 (python-requests)"


class DownloadError(RuntimeError):
    """A download could not complete; the message names the file or host, never a credential."""


class CredentialsError(DownloadError):
    """No usable PhysioNet credentials, or PhysioNet refused them."""


class ChecksumError(DownloadError):
    """A downloaded file's SHA-256 differs from the project's SHA256SUMS.txt."""


class _Retryable(Exception):
    """A transient failure (connection, timeout, 5xx): the transfer may be tried again."""


class _Aborted(Exception):
    """Another file failed fatally: stop this transfer (its .part stays for a later resume)."""


@dataclass(frozen=True)
class Credentials:
    """PhysioNet login; the password is left out of ``repr`` so no traceback or log can show it."""

    username: str = field(repr=False)
    password: str = field(repr=False)
    source: str = "environment"


@dataclass
class DownloadSummary:
    """What one :func:`download_project` call did (the manifest holds the same, without credentials)."""

    name: str
    url: str
    dest: str
    listed: int = 0
    downloaded: int = 0
    already_present: int = 0
    bytes_downloaded: int = 0
    files: dict[str, dict] = field(default_factory=dict)

    @property
    def n_files(self) -> int:
        return len(self.files)

    @property
    def total_bytes(self) -> int:
        return sum(f["bytes"] for f in self.files.values())

    def line(self) -> str:
        return (
            f"{self.name}: {self.n_files} files selected of {self.listed} in {SUMS_NAME}; "
            f"{self.downloaded} downloaded, {self.already_present} already present; "
            f"{_human(self.bytes_downloaded)} transferred, {_human(self.total_bytes)} verified (SHA-256) in {self.dest}"
        )

    def manifest(self) -> dict:
        return {
            "project": self.name,
            "url": self.url,
            "dest": self.dest,
            "n_files": self.n_files,
            "bytes": self.total_bytes,
            "downloaded": self.downloaded,
            "already_present": self.already_present,
            "bytes_downloaded": self.bytes_downloaded,
            "checksums_verified": True,
            "checksum_file": SUMS_NAME,
            "files": {rel: self.files[rel] for rel in sorted(self.files)},
        }


# --------------------------------------------------------------------------------------------------
# URLs, credentials, checksum lists, selection


def project_url(url: str) -> str:
    """The base URL with a trailing slash; refuses credentials in the URL and plain http off-host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DownloadError("a PhysioNet project URL must look like https://physionet.org/files/<project>/<version>/")
    if "@" in parts.netloc:
        raise CredentialsError(
            "the project URL must not contain credentials (user:password@host); "
            f"use ~/.netrc or {ENV_USER} / {ENV_PASSWORD}"
        )
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise CredentialsError(f"refusing to send credentials over plain http to {parts.hostname}; use https")
    if any(segment in (".", "..") for segment in unquote(parts.path).split("/")):
        raise DownloadError("a PhysioNet project URL must not contain '.' or '..' path segments")
    return url if url.endswith("/") else url + "/"


def same_origin(url: str, other: str) -> bool:
    """Same scheme, host and port: the only place a redirect may lead while credentials are attached."""
    a, b = urlsplit(url), urlsplit(other)
    default = {"http": 80, "https": 443}
    return (
        a.scheme == b.scheme
        and (a.hostname or "").lower() == (b.hostname or "").lower()
        and (a.port or default.get(a.scheme)) == (b.port or default.get(b.scheme))
    )


def mirror_dir(dest_root: Path | str, url: str) -> Path:
    """Where a project's tree goes: ``dest_root/<host>/<url path>``, the layout ``wget -r`` makes
    (``resources/physionet/physionet.org/files/mimiciv/3.1``)."""
    parts = urlsplit(url)
    return Path(dest_root) / (parts.hostname or "host") / parts.path.strip("/")


def check_download_config(download: Mapping) -> None:
    """Fail before any job runs on a bad ``download.projects.<name>.url``, naming the key, never the URL."""
    for name, project in download["projects"].items():
        try:
            project_url(project["url"])
        except DownloadError as err:
            raise ValueError(f"config download.projects.{name}.url: {err}") from None


def project_settings(download: Mapping, name: str) -> dict:
    """One project's settings for the workflow rule (plain values; a change reruns that download)."""
    project = download["projects"][name]
    return {
        "url": project_url(project["url"]),
        "dest": str(mirror_dir(download["dest_root"], project["url"])),
        "include": list(project["include"]) if project["include"] is not None else None,
    }


def physionet_credentials(url: str, environ: Mapping[str, str] | None = None) -> Credentials:
    """Credentials for ``url``'s host: ``PHYSIONET_USERNAME`` + ``PHYSIONET_PASSWORD``, else ``~/.netrc``."""
    env = os.environ if environ is None else environ
    host = urlsplit(url).hostname or ""
    user, password = env.get(ENV_USER), env.get(ENV_PASSWORD)
    if user and password:
        return _checked(Credentials(user, password, "environment"))
    if user or password:
        missing = ENV_PASSWORD if user else ENV_USER
        raise CredentialsError(
            f"{missing} is not set: set both {ENV_USER} and {ENV_PASSWORD}, or neither to use ~/.netrc"
        )
    path = Path(env["NETRC"]) if env.get("NETRC") else Path(env.get("HOME") or Path.home()) / ".netrc"
    missing_message = (
        f"no PhysioNet credentials for {host}: set {ENV_USER} and {ENV_PASSWORD}, "
        f"or add 'machine {host} login <user> password <password>' to {path} (chmod 600)"
    )
    if not path.is_file():
        raise CredentialsError(missing_message)
    mode = path.stat()
    if mode.st_uid != os.getuid():
        raise CredentialsError(f"{path} belongs to another user; use your own (chmod 600) or {ENV_USER}")
    if mode.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode.st_mode):04o}); run: chmod 600 {path}"
        )
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except netrc.NetrcParseError as err:  # its message may quote a token of the file: never show it
        raise CredentialsError(f"{path} could not be parsed (line {err.lineno}); fix it or use {ENV_USER}") from None
    except OSError as err:
        raise CredentialsError(f"{path} could not be read ({err.strerror})") from None
    if not entry or not entry[0] or not entry[2]:
        raise CredentialsError(missing_message)
    return _checked(Credentials(entry[0], entry[2], "netrc"))


def _checked(credentials: Credentials) -> Credentials:
    """HTTP basic auth carries Latin-1 only, and a ':' ends the user name: refused before any request, with an
    error that quotes no character of either (requests would fail mid-run, printing the offending character)."""
    for what, value in (("user name", credentials.username), ("password", credentials.password)):
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise CredentialsError(
                f"the PhysioNet {what} from the {credentials.source} holds a character outside Latin-1, which HTTP "
                "basic authentication cannot send"
            ) from None
    if ":" in credentials.username:
        raise CredentialsError(f"the PhysioNet user name from the {credentials.source} contains ':'")
    return credentials


def parse_sha256sums(lines: Iterable[str]) -> dict[str, str]:
    """``{relative path: sha256}`` from PhysioNet's ``SHA256SUMS.txt`` (``<hash> <path>``, one or two
    spaces, an optional ``*`` binary marker). Paths that could leave the destination are refused."""
    sums: dict[str, str] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        digest, _, rel = line.partition(" ")
        rel = rel.lstrip(" ").removeprefix("*")
        if not re.fullmatch(r"[0-9a-fA-F]{64}", digest) or not rel:
            raise DownloadError(f"{SUMS_NAME} line {number} is not '<sha256> <path>'")
        sums[_safe_relpath(rel, f"{SUMS_NAME} line {number}")] = digest.lower()
    return sums


def _safe_relpath(rel: str, where: str) -> str:
    path = PurePosixPath(rel.strip())
    if path.is_absolute() or ".." in path.parts or not path.parts or "\\" in rel:
        raise DownloadError(f"{where}: {rel!r} is not a relative path inside the project")
    return path.as_posix()


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A path glob as a regex: ``*`` and ``?`` stay within one folder, ``**`` crosses folders
    (``files/**`` = everything under files/, ``**/*.hea`` = every header at any depth)."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def read_file_list(path: Path | str) -> list[str]:
    """Relative paths, one per line (blank lines and ``#`` comments ignored)."""
    rels = []
    with open(path) as stream:
        for number, line in enumerate(stream, 1):
            line = line.strip()
            if line and not line.startswith("#"):
                rels.append(_safe_relpath(line, f"file_list {path} line {number}"))
    return rels


def select_files(
    sums: Mapping[str, str], include: Iterable[str] | None = None, file_list: Path | str | None = None
) -> list[str]:
    """The files to mirror, in ``SHA256SUMS.txt`` order.

    ``include`` None (and no ``file_list``): every listed file. Otherwise the union of the files matching
    any ``include`` pattern and the paths of ``file_list``. A pattern that matches nothing, or a listed
    path missing from ``SHA256SUMS.txt`` (its checksum could not be verified), is an error.
    """
    if include is None and file_list is None:
        return list(sums)
    chosen: set[str] = set()
    for pattern in include or ():
        regex = glob_regex(pattern)
        matched = {rel for rel in sums if regex.fullmatch(rel)}
        if not matched:
            raise DownloadError(f"include pattern {pattern!r} matches no file in {SUMS_NAME}")
        chosen |= matched
    if file_list is not None:
        listed = read_file_list(file_list)
        unknown = [rel for rel in listed if rel not in sums]
        if unknown:
            raise DownloadError(
                f"{len(unknown)} path(s) of file_list {file_list} are not in {SUMS_NAME} "
                f"(paths are relative to the project root), e.g. {', '.join(unknown[:3])}"
            )
        chosen.update(listed)
    return [rel for rel in sums if rel in chosen]


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


# --------------------------------------------------------------------------------------------------
# Transfers


class _Mirror:
    """One project's transfers: per-thread sessions, bounded retries, progress and counters."""

    def __init__(
        self,
        url: str,
        dest: Path,
        credentials: Credentials,
        *,
        timeout_s: float,
        retries: int,
        backoff_s: float,
        chunk_size: int,
        progress: tqdm,
        max_file_bytes: int | None = None,
    ):
        self.base = url
        self.host = urlsplit(url).hostname
        self.dest = dest
        self._auth = requests.auth.HTTPBasicAuth(credentials.username, credentials.password)
        self._secret = credentials.password
        self.timeout = timeout_s
        self.retries = max(1, int(retries))
        self.backoff = backoff_s
        self.chunk_size = chunk_size
        self.max_file_bytes = max_file_bytes
        self.progress = progress
        self.stop = threading.Event()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self.bytes_downloaded = 0

    # -- plumbing
    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.auth = self._auth
            # The exact bytes of the file: no transparent decompression of .gz files.
            session.headers.update({"Accept-Encoding": "identity", "User-Agent": USER_AGENT})
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        for session in self._sessions:
            session.close()

    def get(self, rel: str, **kwargs) -> requests.Response:
        """GET ``rel`` with the credentials, following redirects only within the configured origin (scheme, host,
        port). requests would follow any redirect and, for a new host, re-add credentials from ~/.netrc (which may
        hold a ``default`` entry) and send them over plain http after a downgrade: refused here instead."""
        url = self.base + quote(rel)
        for _ in range(MAX_REDIRECTS + 1):
            resp = self.session().get(url, allow_redirects=False, **kwargs)
            if not resp.is_redirect:
                return resp
            target = urljoin(url, resp.headers.get("Location", ""))
            resp.close()
            if not same_origin(self.base, target):
                moved = urlsplit(target)
                raise DownloadError(
                    f"{rel}: {self.host} redirected to {moved.scheme}://{moved.hostname}, another scheme or host; "
                    "refused, credentials are sent only to the configured project URL"
                )
            url = target
        raise DownloadError(f"{rel}: more than {MAX_REDIRECTS} redirects from {self.host}")

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _count(self, n: int) -> None:
        with self._lock:
            self.bytes_downloaded += n
        self.progress.update(n)

    def _check_status(self, resp: requests.Response, rel: str) -> None:
        if resp.status_code in (401, 403):
            extra = ""
            if resp.status_code == 403:
                extra = " or the account has no access to this project (sign its data use agreement)"
            raise CredentialsError(
                f"PhysioNet refused the credentials for {self.host} ({CREDENTIAL_HINT}){extra}; "
                f"HTTP {resp.status_code} for {rel}"
            )
        if resp.status_code in RETRY_STATUS:
            raise _Retryable(f"HTTP {resp.status_code}")
        if resp.status_code == 404:
            raise DownloadError(f"{rel}: not found on {self.host} (HTTP 404 for {self.base}{quote(rel)})")

    def with_retries(self, rel: str, attempt_fn):
        """Run ``attempt_fn`` at most ``retries`` times, backing off between transient failures."""
        last = ""
        for attempt in range(1, self.retries + 1):
            if self.stop.is_set():
                raise _Aborted
            try:
                return attempt_fn()
            except _Retryable as err:
                last = self._redact(str(err))
                if attempt < self.retries:
                    delay = self.backoff * 2 ** (attempt - 1)
                    log.warning("%s: %s; retry %d of %d in %.0f s", rel, last, attempt, self.retries - 1, delay)
                    time.sleep(delay)
        raise DownloadError(f"{rel}: gave up after {self.retries} tries ({last})")

    def _check_size(self, rel: str, part: Path, size: int) -> None:
        """Stop a file that would exceed ``download.max_file_gb``: a misbehaving server must not fill the disk."""
        if self.max_file_bytes is not None and size > self.max_file_bytes:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{rel}: {_human(size)} or more exceeds the per-file cap of {_human(self.max_file_bytes)} "
                "(config download.max_file_gb); partial file deleted"
            )

    # -- one transfer into a .part file
    def transfer(self, rel: str, part: Path) -> bool:
        """One GET of ``rel`` into ``part``, continuing it when it exists. True when bytes were
        appended to an earlier partial download (a checksum mismatch may then be the resume's fault)."""
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            with self.get(rel, headers=headers, stream=True, timeout=self.timeout) as resp:
                self._check_status(resp, rel)
                if resp.status_code == 416 and offset:
                    return True  # the .part already holds the whole file: the checksum decides
                if resp.status_code == 206 and offset:
                    match = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
                    if not match or int(match.group(1)) != offset:
                        part.unlink()
                        raise _Retryable(f"server answered a different range than bytes={offset}-")
                    mode = "ab"
                elif resp.status_code == 200:
                    if offset:
                        log.info("%s: server ignored the range request; downloading from the start", rel)
                    mode, offset = "wb", 0
                else:
                    raise DownloadError(f"{rel}: unexpected HTTP {resp.status_code} from {self.host}")
                length = resp.headers.get("Content-Length")
                if length is not None and length.isdigit():
                    self._check_size(rel, part, offset + int(length))
                received = 0
                with open(part, mode) as stream:
                    for chunk in resp.raw.stream(self.chunk_size, decode_content=False):
                        if self.stop.is_set():
                            raise _Aborted
                        stream.write(chunk)
                        received += len(chunk)
                        self._count(len(chunk))
                        self._check_size(rel, part, offset + received)  # a server that sends more than it said
                if length is not None and received < int(length):
                    raise _Retryable(f"connection closed after {offset + received} bytes")
                return mode == "ab"
        except (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as err:
            # requests/urllib3 messages hold host, port and path only; redacted anyway, never chained.
            raise _Retryable(f"{type(err).__name__}: {self._redact(str(err))}") from None

    # -- one file: verify, download, verify
    def ensure(self, rel: str, expected: str) -> tuple[str, int]:
        """('present' | 'downloaded', size) once ``dest/rel`` exists with the expected SHA-256."""
        final = self.dest / rel
        if final.is_file():
            if sha256_file(final) == expected:
                return "present", final.stat().st_size
            log.warning("%s: present but its SHA-256 differs from %s; downloading it again", rel, SUMS_NAME)
        final.parent.mkdir(parents=True, exist_ok=True)
        part = final.with_name(final.name + ".part")
        for fresh in (False, True):  # at most one restart from zero after a resumed transfer
            resumed = self.with_retries(rel, lambda: self.transfer(rel, part))
            actual = sha256_file(part)
            if actual == expected:
                os.replace(part, final)
                return "downloaded", final.stat().st_size
            part.unlink()
            if not resumed or fresh:
                raise ChecksumError(
                    f"{rel}: SHA-256 mismatch (expected {expected} from {SUMS_NAME}, got {actual}); download deleted"
                )
            log.warning("%s: SHA-256 mismatch after a resumed transfer; downloading it again from the start", rel)
        raise AssertionError("unreachable")

    def fetch_sums(self) -> dict[str, str]:
        """Download SHA256SUMS.txt afresh (kept beside the files, as in the PhysioNet tree) and parse it."""
        self.dest.mkdir(parents=True, exist_ok=True)
        path = self.dest / SUMS_NAME
        part = self.dest / f"{SUMS_NAME}.{os.getpid()}.part"  # two projects may share one tree
        part.unlink(missing_ok=True)
        try:
            self.with_retries(SUMS_NAME, lambda: self.transfer(SUMS_NAME, part))
            with open(part, encoding="utf-8") as stream:
                sums = parse_sha256sums(stream)  # a list that does not parse leaves the previous one in place
            os.replace(part, path)
        finally:
            part.unlink(missing_ok=True)
        return sums


def download_project(
    url: str,
    dest: Path | str,
    *,
    include: Iterable[str] | None = None,
    file_list: Path | str | None = None,
    manifest: Path | str | None = None,
    name: str | None = None,
    credentials: Credentials | None = None,
    workers: int = 1,
    timeout_s: float = 60.0,
    retries: int = 3,
    backoff_s: float = 2.0,
    chunk_size: int = 1 << 20,
    max_file_gb: float | None = DEFAULT_MAX_FILE_GB,
) -> DownloadSummary:
    """Mirror the selected files of the PhysioNet project at ``url`` into ``dest`` (see module doc).

    ``workers`` files are transferred at a time. Checksum mismatches do not stop the other files: they
    are all named in one :class:`ChecksumError` at the end. Credential refusals and files that still
    fail after ``retries`` tries stop the run at once (finished files and ``.part`` files stay, so a
    rerun resumes). A file larger than ``max_file_gb`` (the checksum list included; None: no cap) stops
    the run with its partial file deleted. ``manifest`` (JSON: counts, bytes, each file's SHA-256; no
    credentials) is written only when every selected file is present and verified.
    """
    url = project_url(url)
    dest = Path(dest)
    name = name or PurePosixPath(urlsplit(url).path).as_posix().strip("/").replace("/", "-") or "project"
    credentials = credentials or physionet_credentials(url)
    include = list(include) if include is not None else None
    summary = DownloadSummary(name=name, url=url, dest=str(dest))
    progress = tqdm(desc=name, unit="B", unit_scale=True, unit_divisor=1000, mininterval=5, leave=True)
    mirror = _Mirror(
        url,
        dest,
        credentials,
        timeout_s=timeout_s,
        retries=retries,
        backoff_s=backoff_s,
        chunk_size=chunk_size,
        progress=progress,
        max_file_bytes=None if max_file_gb is None else int(max_file_gb * 1e9),
    )
    try:
        sums = mirror.fetch_sums()
        selected = select_files(sums, include, file_list)
        summary.listed = len(sums)
        log.info("%s: %d of %d files in %s selected", name, len(selected), len(sums), SUMS_NAME)
        failures = _run(mirror, selected, sums, summary, max(1, int(workers)))
    finally:
        mirror.close()
        progress.close()
    summary.bytes_downloaded = mirror.bytes_downloaded
    if failures:
        shown = "; ".join(failures[:20]) + (f"; and {len(failures) - 20} more" if len(failures) > 20 else "")
        raise ChecksumError(
            f"{name}: {len(failures)} file(s) failed SHA-256 verification (rerun to fetch them again): {shown}"
        )
    log.info("%s", summary.line())
    if manifest is not None:
        manifest = Path(manifest)
        manifest.parent.mkdir(parents=True, exist_ok=True)
        tmp = manifest.with_name(manifest.name + ".tmp")
        tmp.write_text(json.dumps(summary.manifest(), indent=1) + "\n")
        os.replace(tmp, manifest)
    return summary


def _run(
    mirror: _Mirror, selected: list[str], sums: Mapping[str, str], summary: DownloadSummary, workers: int
) -> list[str]:
    """Transfer ``selected`` with ``workers`` threads (a bounded window of queued files)."""
    failures: list[str] = []
    queue = iter(selected)
    pending: dict[Future, str] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="download") as pool:

        def fill() -> None:
            while len(pending) < 4 * workers and (rel := next(queue, None)) is not None:
                pending[pool.submit(mirror.ensure, rel, sums[rel])] = rel

        fill()
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    rel = pending.pop(future)
                    try:
                        status, size = future.result()
                    except ChecksumError as err:
                        log.error("%s", err)
                        failures.append(str(err))
                        continue
                    summary.files[rel] = {"bytes": size, "sha256": sums[rel]}
                    if status == "downloaded":
                        summary.downloaded += 1
                    else:
                        summary.already_present += 1
                    mirror.progress.set_postfix_str(f"{len(summary.files)}/{len(selected)} files", refresh=False)
                fill()
        except BaseException:
            mirror.stop.set()  # running transfers stop at their next chunk and keep their .part
            for future in pending:
                future.cancel()
            raise
    return failures


def main(argv: list[str] | None = None) -> None:
    """``python -m hftri_mimic.ingest.download URL DEST [--include PATTERN ...] [--file-list FILE]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="project URL, e.g. https://physionet.org/files/mimiciv/3.1/")
    parser.add_argument("dest", type=Path, help="folder that receives the project's tree")
    parser.add_argument("--include", nargs="*", default=None, help="glob patterns, e.g. 'hosp/*.csv.gz'")
    parser.add_argument("--file-list", type=Path, default=None, help="text file of relative paths")
    parser.add_argument("--manifest", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--retries", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        summary = download_project(
            args.url,
            args.dest,
            include=args.include,
            file_list=args.file_list,
            manifest=args.manifest,
            workers=args.workers,
            retries=args.retries,
        )
    except DownloadError as err:
        raise SystemExit(f"error: {err}") from None
    print(summary.line())


if __name__ == "__main__":
    main()
