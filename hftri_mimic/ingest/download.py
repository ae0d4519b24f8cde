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
- a file already present is kept only when its SHA-256 matches (verified, not trusted by size). A file verified
  once is not read again: ``<dest>/.hftri-verified.parquet`` holds each verified file's SHA-256 with the size and
  modification time it had, and a file whose size and mtime are unchanged is taken as verified
  (``reverify=True`` re-hashes everything);
- ``SHA256SUMS.txt`` itself is fetched once (resumably, into ``SHA256SUMS.txt.part``) and reused on later runs: a
  PhysioNet project version never changes its files (a correction is a new version); ``reverify`` fetches it again;
- before the first transfer the files still to fetch are counted and sized (HTTP HEAD) and the plan is logged;
- connection errors, timeouts and HTTP 429/5xx are retried a bounded number of times with
  exponential backoff; 401/403 stop at once with a message that names the host, never the password.

Open-access projects (MIMIC-IV-ECG, PTB-XL; ``access="open"``) are fetched without credentials: none are read,
and none are sent. Credentialed ones (MIMIC-IV, MIMIC-IV-ECHO) take them from ``PHYSIONET_USERNAME`` +
``PHYSIONET_PASSWORD`` or else ``~/.netrc`` (``$NETRC``
when set) and are sent only as an HTTP basic-auth header: they are never logged, printed, put in a
URL, an error message, the manifest or any file. They go only to the configured project URL's origin (scheme,
host, port): a redirect anywhere else is refused before it is followed. A ``.netrc`` readable by other users, or
owned by another user, is refused. Prefer ``.netrc``: environment variables reach every job Snakemake starts
(and, on a cluster, every batch job), a file with mode 600 only this process.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import netrc
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import ClassVar
from urllib.parse import quote, unquote, urljoin, urlsplit

import polars as pl
import requests
import urllib3
from tqdm import tqdm

from hftri_mimic.ingest.source_files import masked

log = logging.getLogger(__name__)

SUMS_NAME = "SHA256SUMS.txt"
VERIFIED_NAME = ".hftri-verified.parquet"  # the verify-once cache, beside the files it describes
LOCK_NAME = ".hftri-sums.lock"  # held while the checksum list is fetched
FAILED_NAME = ".hftri-failed.txt"  # the paths of the last run's checksum failures
# Above this many files to fetch the sizes are not asked for one by one (a whole archive is 800k+ files): the plan
# then gives the count only. A dry run sizes them all.
SIZE_LIMIT = 20_000
ACCESS = ("credentialed", "open")
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
    files_hashed: int = 0  # files read to compute their SHA-256 (downloads included); 0 on an unchanged rerun
    bytes_hashed: int = 0
    to_fetch: int = 0  # files not yet present and verified when the run started
    bytes_to_fetch: int | None = 0  # their size by HTTP HEAD (None: the server did not say for some)
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
            f"{_human(self.bytes_downloaded)} transferred, {_human(self.total_bytes)} verified (SHA-256) "
            f"in {self.dest}; {self.files_hashed} files ({_human(self.bytes_hashed)}) hashed"
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
            "files_hashed": self.files_hashed,
            "bytes_hashed": self.bytes_hashed,
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
    cohort_projects(download)
    for name, project in download["projects"].items():
        if name.endswith(".cohort"):  # <name>.cohort.download.json is phase 2's manifest of <name>
            raise ValueError(f"config download.projects.{name}: a project name must not end in '.cohort'")
        try:
            project_url(project["url"])
        except DownloadError as err:
            raise ValueError(f"config download.projects.{name}.url: {err}") from None


def cohort_projects(download: Mapping) -> dict[str, str]:
    """Which project receives the cohort's files of each tree (``download.projects.<name>.cohort_files``)."""
    trees: dict[str, str] = {}
    for name, project in download["projects"].items():
        tree = project.get("cohort_files")  # absent: none
        if tree is None:
            continue
        if tree in trees:
            raise ValueError(
                f"config download.projects: {trees[tree]} and {name} both have cohort_files: {tree}; give one"
            )
        trees[tree] = name
    return trees


def project_settings(download: Mapping, name: str) -> dict:
    """One project's settings for the workflow rule (plain values; a change reruns that download)."""
    project = download["projects"][name]
    return {
        "url": project_url(project["url"]),
        "dest": str(mirror_dir(download["dest_root"], project["url"])),
        "include": list(project["include"]) if project["include"] is not None else None,
        "access": project.get("access", "credentialed"),
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
                f"(paths are relative to the project root; a list fetched before a new version? download.reverify "
                f"fetches it again), e.g. {', '.join(sorted({masked(rel) for rel in unknown})[:3])}"
            )
        chosen.update(listed)
    return [rel for rel in sums if rel in chosen]


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


class VerifiedCache:
    """The SHA-256 of every file verified in one mirror, keyed by relative path, size, modification time and inode
    change time.

    A file whose size, mtime and ctime (ns) equal the recorded ones is taken as verified without reading it:
    re-hashing a terabyte tree on every run takes hours. A changed file is hashed again: a write changes the mtime,
    and setting the mtime back (``touch -d``, ``cp -p``, ``rsync -t``) changes the ctime, which no user can set. Kept as
    ``<dest>/.hftri-verified.parquet``, rewritten atomically and merged with what is on disk when saved, so two runs
    on one tree lose at most entries, which then only cost a re-hash.
    """

    SCHEMA: ClassVar[dict] = {
        "path": pl.String,
        "size": pl.Int64,
        "mtime_ns": pl.Int64,
        "ctime_ns": pl.Int64,
        "sha256": pl.String,
    }

    def __init__(self, dest: Path):
        self.file = dest / VERIFIED_NAME
        self._entries = self._read()
        self._changed: dict[str, tuple[int, int, int, str]] = {}
        self._lock = threading.Lock()

    def _read(self) -> dict[str, tuple[int, int, int, str]]:
        if not self.file.is_file():
            return {}
        try:
            frame = pl.read_parquet(self.file)
        except Exception as err:  # a damaged cache only costs re-hashing: start afresh
            log.warning("%s could not be read (%s); every present file is hashed again", self.file, type(err).__name__)
            return {}
        return {path: tuple(entry) for path, *entry in frame.select(list(self.SCHEMA)).iter_rows()}

    def lookup(self, rel: str, st: os.stat_result) -> str | None:
        """The recorded SHA-256 of ``rel`` if the file still has the size and mtime it had when verified."""
        with self._lock:
            entry = self._changed.get(rel) or self._entries.get(rel)
        if entry is None or entry[:3] != (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
            return None
        return entry[3]

    def record(self, rel: str, st: os.stat_result, sha256: str) -> None:
        with self._lock:
            self._changed[rel] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, sha256)

    def save(self) -> None:
        with self._lock:
            if not self._changed:
                return
            changed = dict(self._changed)
        entries = self._read() | changed  # another run's entries kept, ours win
        rows = [(path, *entry) for path, entry in sorted(entries.items())]
        tmp = self.file.with_name(f"{self.file.name}.{os.getpid()}.tmp")
        pl.DataFrame(rows, schema=self.SCHEMA, orient="row").write_parquet(tmp)
        os.replace(tmp, self.file)
        with self._lock:
            self._entries = entries
            for rel, entry in changed.items():
                if self._changed.get(rel) == entry:
                    del self._changed[rel]


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
        credentials: Credentials | None,
        *,
        timeout_s: float,
        retries: int,
        backoff_s: float,
        chunk_size: int,
        progress: tqdm,
        max_file_bytes: int | None = None,
        reverify: bool = False,
    ):
        self.base = url
        self.host = urlsplit(url).hostname
        self.dest = dest
        # Open access: no credentials sent. A no-op auth rather than None, since requests would otherwise fill in
        # ~/.netrc's entry for the host by itself.
        self._auth = (
            requests.auth.HTTPBasicAuth(credentials.username, credentials.password) if credentials else _no_auth
        )
        self._secret = credentials.password if credentials else ""
        self.open_access = credentials is None
        self.reverify = reverify
        self.cache = VerifiedCache(dest)
        self.files_hashed = 0
        self.bytes_hashed = 0
        self.checked: dict[str, bool] = {}  # rel -> present and verified, as the plan found it
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

    def get(self, rel: str, method: str = "GET", **kwargs) -> requests.Response:
        """GET (or HEAD) ``rel`` with the credentials, following redirects only within the configured origin (scheme,
        host, port). requests would follow any redirect and, for a new host, re-add credentials from ~/.netrc (which
        may hold a ``default`` entry) and send them over plain http after a downgrade: refused here instead."""
        url = self.base + quote(rel)
        for _ in range(MAX_REDIRECTS + 1):
            resp = self.session().request(method, url, allow_redirects=False, **kwargs)
            if not resp.is_redirect:
                return resp
            target = urljoin(url, resp.headers.get("Location", ""))
            resp.close()
            if not same_origin(self.base, target):
                moved = urlsplit(target)
                raise DownloadError(
                    f"{masked(rel)}: {self.host} redirected to {moved.scheme}://{moved.hostname}, another scheme or "
                    "host; refused, credentials are sent only to the configured project URL"
                )
            url = target
        raise DownloadError(f"{masked(rel)}: more than {MAX_REDIRECTS} redirects from {self.host}")

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _count(self, n: int) -> None:
        with self._lock:
            self.bytes_downloaded += n
        self.progress.update(n)

    def _check_status(self, resp: requests.Response, rel: str) -> None:
        if resp.status_code in (401, 403) and self.open_access:
            raise CredentialsError(
                f"{self.host} asks for a login (HTTP {resp.status_code} for {masked(rel)}) but the project is "
                "configured as open access (download.projects.<name>.access: open); set access: credentialed if it "
                "is not"
            )
        if resp.status_code in (401, 403):
            extra = ""
            if resp.status_code == 403:
                extra = " or the account has no access to this project (sign its data use agreement)"
            raise CredentialsError(
                f"PhysioNet refused the credentials for {self.host} ({CREDENTIAL_HINT}){extra}; "
                f"HTTP {resp.status_code} for {masked(rel)}"
            )
        if resp.status_code in RETRY_STATUS:
            raise _Retryable(f"HTTP {resp.status_code}")
        if resp.status_code == 404:
            raise DownloadError(f"{masked(rel)}: not found on {self.host} (HTTP 404)")

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
                    log.warning("%s: %s; retry %d of %d in %.0f s", masked(rel), last, attempt, self.retries - 1, delay)
                    time.sleep(delay)
        raise DownloadError(f"{masked(rel)}: gave up after {self.retries} tries ({last})")

    def _check_size(self, rel: str, part: Path, size: int) -> None:
        """Stop a file that would exceed ``download.max_file_gb``: a misbehaving server must not fill the disk."""
        if self.max_file_bytes is not None and size > self.max_file_bytes:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{masked(rel)}: {_human(size)} or more exceeds the per-file cap of {_human(self.max_file_bytes)} "
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
                        log.info("%s: server ignored the range request; downloading from the start", masked(rel))
                    mode, offset = "wb", 0
                else:
                    raise DownloadError(f"{masked(rel)}: unexpected HTTP {resp.status_code} from {self.host}")
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

    # -- hashing, with the verify-once cache
    def hash(self, path: Path) -> str:
        with self._lock:
            self.files_hashed += 1
            self.bytes_hashed += path.stat().st_size
        return sha256_file(path)

    def verified(self, rel: str, expected: str) -> bool:
        """Whether ``dest/rel`` is present with the expected SHA-256: from the cache when the file's size and mtime
        are unchanged since it was verified (and ``reverify`` is off), else by hashing it."""
        final = self.dest / rel
        if not final.is_file():
            return False
        st = final.stat()
        if not self.reverify and self.cache.lookup(rel, st) == expected:
            return True
        if self.hash(final) == expected:
            self.cache.record(rel, st, expected)
            return True
        log.warning("%s: present but its SHA-256 differs from %s; downloading it again", masked(rel), SUMS_NAME)
        return False

    def size_of(self, rel: str) -> int | None:
        """The file's size on the server (HTTP HEAD's Content-Length), None when it does not say."""

        def attempt() -> int | None:
            try:
                with self.get(rel, method="HEAD", timeout=self.timeout) as resp:
                    self._check_status(resp, rel)
                    length = resp.headers.get("Content-Length")
                    return int(length) if resp.status_code == 200 and length and length.isdigit() else None
            except (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as err:
                raise _Retryable(f"{type(err).__name__}: {self._redact(str(err))}") from None

        try:
            return self.with_retries(rel, attempt)
        except CredentialsError:
            raise
        except DownloadError as err:  # the size is for the plan only: the transfer will tell
            log.warning("%s", err)
            return None

    # -- one file: verify, download, verify
    def ensure(self, rel: str, expected: str) -> tuple[str, int]:
        """('present' | 'downloaded', size) once ``dest/rel`` exists with the expected SHA-256."""
        final = self.dest / rel
        checked = self.checked.pop(rel, None)  # what the plan found, so that no file is hashed twice
        if checked if checked is not None else self.verified(rel, expected):
            return "present", final.stat().st_size
        final.parent.mkdir(parents=True, exist_ok=True)
        part = final.with_name(final.name + ".part")
        for fresh in (False, True):  # at most one restart from zero after a resumed transfer
            resumed = self.with_retries(rel, lambda: self.transfer(rel, part))
            actual = self.hash(part)
            if actual == expected:
                os.replace(part, final)
                self.cache.record(rel, final.stat(), actual)
                return "downloaded", final.stat().st_size
            part.unlink()
            if not resumed or fresh:
                raise ChecksumError(
                    f"{masked(rel)}: SHA-256 mismatch (expected {expected} from {SUMS_NAME}, got {actual}); "
                    "download deleted"
                )
            log.warning(
                "%s: SHA-256 mismatch after a resumed transfer; downloading it again from the start", masked(rel)
            )
        raise AssertionError("unreachable")

    def fetch_sums(self) -> dict[str, str]:
        """The project's SHA256SUMS.txt, parsed: the copy kept beside the files when it was fetched whole by an earlier
        run and is unchanged on disk (a project version's files never change on PhysioNet), else fetched into
        ``SHA256SUMS.txt.part``, continuing a partial one (MIMIC-IV-ECG's list is about 176 MB)."""
        self.dest.mkdir(parents=True, exist_ok=True)
        path = self.dest / SUMS_NAME
        part = self.dest / f"{SUMS_NAME}.part"
        with open(self.dest / LOCK_NAME, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two projects (or both phases) may share one tree
            if path.is_file() and not self.reverify and self.cache.lookup(SUMS_NAME, path.stat()) is not None:
                log.info("%s: %s fetched earlier, unchanged on disk: reused", self.host, SUMS_NAME)
                with open(path, encoding="utf-8") as stream:
                    return parse_sha256sums(stream)
            if self.reverify:
                part.unlink(missing_ok=True)
            self.with_retries(SUMS_NAME, lambda: self.transfer(SUMS_NAME, part))
            try:
                with open(part, "rb") as stream:
                    stream.seek(max(0, part.stat().st_size - 1))
                    if stream.read(1) != b"\n":  # a cut without Content-Length to tell: every line ends in one
                        raise DownloadError("does not end with a newline (cut off?)")
                with open(part, encoding="utf-8") as stream:
                    sums = parse_sha256sums(stream)  # a list that does not parse leaves the previous one in place
            except (DownloadError, UnicodeDecodeError) as err:
                part.unlink()  # the next run starts it clean
                raise DownloadError(f"{SUMS_NAME} from {self.host}: {err}") from None
            os.replace(part, path)
            self.cache.record(SUMS_NAME, path.stat(), self.hash(path))
            self.cache.save()
        return sums


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


def download_project(
    url: str,
    dest: Path | str,
    *,
    include: Iterable[str] | None = None,
    file_list: Path | str | None = None,
    manifest: Path | str | None = None,
    name: str | None = None,
    access: str = "credentialed",
    credentials: Credentials | None = None,
    workers: int = 1,
    timeout_s: float = 60.0,
    retries: int = 3,
    backoff_s: float = 2.0,
    chunk_size: int = 1 << 20,
    max_file_gb: float | None = DEFAULT_MAX_FILE_GB,
    reverify: bool = False,
    dry_run: bool = False,
    report: Callable[[str], None] | None = None,
) -> DownloadSummary:
    """Mirror the selected files of the PhysioNet project at ``url`` into ``dest`` (see module doc).

    ``access``: ``credentialed`` (credentials from ``credentials``, else the environment or ~/.netrc) or ``open``
    (nothing read, nothing sent). ``workers`` files are transferred at a time. Before the first transfer the files
    not yet verified are sized (HTTP HEAD) and the plan is logged; ``dry_run`` stops there. Checksum mismatches do not
    stop the other files: they are all named in one :class:`ChecksumError` at the end. Credential refusals and files
    that still fail after ``retries`` tries stop the run at once (finished files and ``.part`` files stay, so a
    rerun resumes). A file larger than ``max_file_gb`` (the checksum list included; None: no cap) stops the run with
    its partial file deleted. ``reverify`` re-hashes every present file and fetches the checksum list again.
    ``manifest`` (JSON: counts, bytes, each file's SHA-256; no credentials) is written only when every selected
    file is present and verified. ``report`` also receives the plan line and the closing summary (the workflow
    prints them, so that the count and size show in the terminal before the transfers start).
    """
    if access not in ACCESS:
        raise DownloadError(f"access must be one of {', '.join(ACCESS)}, not {access!r}")
    url = project_url(url)
    dest = Path(dest)
    name = name or PurePosixPath(urlsplit(url).path).as_posix().strip("/").replace("/", "-") or "project"
    credentials = None if access == "open" else credentials or physionet_credentials(url)
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
        reverify=reverify,
    )
    workers = max(1, int(workers))
    try:
        sums = mirror.fetch_sums()
        selected = select_files(sums, include, file_list)
        summary.listed = len(sums)
        plan_line = _plan(mirror, selected, sums, summary, workers, dry_run)
        if report is not None:
            report(plan_line)
        if dry_run:
            return summary
        failures = _run(mirror, selected, sums, summary, workers)
    finally:
        mirror.cache.save()
        mirror.close()
        progress.close()
        summary.bytes_downloaded = mirror.bytes_downloaded
        summary.files_hashed, summary.bytes_hashed = mirror.files_hashed, mirror.bytes_hashed
    if failures:
        failed_list = dest / FAILED_NAME  # the exact paths, beside the files (private); messages show them masked
        failed_list.write_text("".join(f"{rel}\n" for rel, _ in failures))
        messages = [message for _, message in failures]
        shown = "; ".join(messages[:20]) + (f"; and {len(messages) - 20} more" if len(messages) > 20 else "")
        raise ChecksumError(
            f"{name}: {len(failures)} file(s) failed SHA-256 verification (rerun to fetch them again; listed in "
            f"{failed_list}): {shown}"
        )
    log.info("%s", summary.line())
    if report is not None:
        report(summary.line())
    if manifest is not None:
        manifest = Path(manifest)
        manifest.parent.mkdir(parents=True, exist_ok=True)
        tmp = manifest.with_name(manifest.name + ".tmp")
        tmp.write_text(json.dumps(summary.manifest(), indent=1) + "\n")
        os.replace(tmp, manifest)
    return summary


def _plan(
    mirror: _Mirror,
    selected: list[str],
    sums: Mapping[str, str],
    summary: DownloadSummary,
    workers: int,
    dry_run: bool = False,
) -> str:
    """Count (and size, by HTTP HEAD) the selected files that are not yet present and verified; log the plan and
    return its line."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
        present = list(pool.map(lambda rel: mirror.verified(rel, sums[rel]), selected))
    mirror.checked = dict(zip(selected, present, strict=True))
    missing = [rel for rel, ok in zip(selected, present, strict=True) if not ok]
    present_bytes = sum((mirror.dest / rel).stat().st_size for rel, ok in zip(selected, present, strict=True) if ok)
    sizes: list[int | None] = []
    if len(missing) > SIZE_LIMIT and not dry_run:
        sizes = [None] * len(missing)
    elif missing:
        # HEAD requests are light: more of them at once than transfers
        with ThreadPoolExecutor(max_workers=min(16, 4 * workers), thread_name_prefix="size") as pool:
            sizes = list(tqdm(pool.map(mirror.size_of, missing), total=len(missing), desc=f"{summary.name}: sizing",
                              mininterval=5, disable=len(missing) < 100))  # fmt: skip
    # a partial file left by an interrupted run is continued, not fetched again
    sizes = [
        None if size is None else max(0, size - _part_size(mirror.dest / rel))
        for rel, size in zip(missing, sizes, strict=True)
    ]
    known = [size for size in sizes if size is not None]
    summary.to_fetch = len(missing)
    summary.bytes_to_fetch = sum(known) if len(known) == len(sizes) else None
    size_text = _human(sum(known)) + (
        "" if len(known) == len(sizes) else f" (+ {len(sizes) - len(known)} of unknown size)"
    )
    line = (
        f"{summary.name}: {len(selected)} of {len(sums)} files in {SUMS_NAME} selected; {len(selected) - len(missing)} "
        f"({_human(present_bytes)}) present and verified, {len(missing)} to fetch ({size_text})"
    )
    log.info("%s", line)
    return line


def _part_size(final: Path) -> int:
    part = final.with_name(final.name + ".part")
    return part.stat().st_size if part.is_file() else 0


def _run(
    mirror: _Mirror, selected: list[str], sums: Mapping[str, str], summary: DownloadSummary, workers: int
) -> list[tuple[str, str]]:
    """Transfer ``selected`` with ``workers`` threads (a bounded window of queued files); (path, message) of each
    checksum failure."""
    failures: list[tuple[str, str]] = []
    queue = iter(selected)
    pending: dict[Future, str] = {}
    saved_at = time.monotonic()
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
                        failures.append((rel, str(err)))
                        continue
                    summary.files[rel] = {"bytes": size, "sha256": sums[rel]}
                    if status == "downloaded":
                        summary.downloaded += 1
                    else:
                        summary.already_present += 1
                    mirror.progress.set_postfix_str(f"{len(summary.files)}/{len(selected)} files", refresh=False)
                if time.monotonic() - saved_at > 60:  # a killed run keeps what it verified
                    mirror.cache.save()
                    saved_at = time.monotonic()
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
    parser.add_argument("--access", choices=ACCESS, default="credentialed", help="open: no credentials (MIMIC-IV-ECG)")
    parser.add_argument("--reverify", action="store_true", help="re-hash every present file")
    parser.add_argument("--dry-run", action="store_true", help="count and size what would be fetched, then stop")
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
            access=args.access,
            reverify=args.reverify,
            dry_run=args.dry_run,
        )
    except DownloadError as err:
        raise SystemExit(f"error: {err}") from None
    print(summary.line())


if __name__ == "__main__":
    main()
