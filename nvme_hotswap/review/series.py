"""A series as posted: read with b4 (and git's own mail tools), never with a parser of our own.

SERIES may be an mbox (as a mail client saves a thread, or as `b4 am` writes one), a folder of
`git format-patch` files, a git range in QEMU_SRC (`base..tip`), or a Message-Id (b4 fetches it
from lore; this machine has no route there, which is said as such). Whatever the form, the mails
go through `b4 am --offline-mode -m`, which orders them, picks the newest revision, collects
trailers sent as replies and writes one mbox ready for `git am`; `git mailsplit` cuts it into one
mail per patch, each of which keeps its Message-Id (a reply to a patch answers that id).
"""
from __future__ import annotations

import dataclasses
import email
import email.policy
import hashlib
import re
import shutil
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

B4_BOUND_S = 120.0
SUBJECT_PREFIX = re.compile(r"^\s*\[(?P<tags>[^\]]*?PATCH[^\]]*)\]\s*")
NUMBERED = re.compile(r"(?:^|\s)(?P<n>\d+)/(?P<m>\d+)(?:\s|$)")
VERSION = re.compile(r"(?:^|\s)v(?P<v>\d+)(?:\s|$)", re.IGNORECASE)
BASE_COMMIT = re.compile(r"^base-commit:\s*(?P<sha>[0-9a-f]{7,40})\s*$", re.MULTILINE)
BASED_ON = re.compile(r"^Based-on:\s*(?P<ref>\S.*?)\s*$", re.MULTILINE | re.IGNORECASE)


class SeriesError(Exception):
    """SERIES cannot be read; the text names what was given and what to do."""


@dataclasses.dataclass(frozen=True)
class Patch:
    number: int          # 1-based, in the series' order
    subject: str         # without its [PATCH vN i/M] prefix
    message_id: str      # <...>, "" when the mail had none
    mail: Path           # one mail, as git am takes it


@dataclasses.dataclass(frozen=True)
class Series:
    source: str                   # what SERIES was
    subject: str                  # the cover's subject as posted ("[PATCH v2 0/5] ..."), else patch 1's
    version: int
    patches: tuple[Patch, ...]
    cover_message_id: str         # "" without a cover letter
    base_hint: str                # "base-commit: <sha>" or "Based-on: <ref>" from the cover, or ""

    @property
    def total(self) -> int:
        return len(self.patches)

    def label(self, patch: Patch) -> str:
        return f"{patch.number}/{self.total}"

    def quilt(self, folder: Path, patches: list[Patch], first: list[Path] | None = None) -> Path:
        """A PATCHES folder for scripts/build-qemu.sh: a `series` file naming these mails in order,
        after the patch files `first` (those of the base, when it has its own)."""
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for n, f in enumerate(first or [], 1):
            name = f"base-{n:02d}-{f.name}"
            shutil.copyfile(f, folder / name)
            names.append(name)
        for p in patches:
            shutil.copyfile(p.mail, folder / p.mail.name)
            names.append(p.mail.name)
        (folder / "series").write_text("".join(f"{n}\n" for n in names))
        return folder


def b4_binary() -> Path:
    """b4 from this interpreter's environment (setup.cfg pins it)."""
    path = Path(sys.executable).parent / "b4"
    if not path.exists():
        raise SeriesError(f"b4 is not installed next to {sys.executable}; run `make venv` (setup.cfg pins b4)")
    return path


def strip_prefix(subject: str) -> tuple[str, int, int | None]:
    """'[PATCH v2 3/5] block: x' -> ('block: x', 2, 3): the subject, its version (1 if unnumbered) and position."""
    one_line = " ".join(subject.split())
    m = SUBJECT_PREFIX.match(one_line)
    if not m:
        return one_line, 1, None
    tags = m.group("tags")
    v, n = VERSION.search(tags), NUMBERED.search(tags)
    return one_line[m.end():], int(v.group("v")) if v else 1, int(n.group("n")) if n else None


def _message(path: Path) -> EmailMessage:
    with path.open("rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _body(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    return part.get_content() if part is not None else ""


def quoted_text(mail: Path) -> str:
    """The body of a mail, as the reply quotes it."""
    return _body(_message(mail))


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=B4_BOUND_S)
    except subprocess.TimeoutExpired as exc:
        raise SeriesError(f"{what}: no answer within {B4_BOUND_S:g} s") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise SeriesError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc


def _mbox_of_folder(folder: Path, out: Path) -> Path:
    """The format-patch files of `folder` (sorted by name: 0000-cover-letter first) as one mbox.

    `git format-patch` without --thread writes no Message-Id, and b4 threads by them: a mail
    without one gets a local id (and a reference to the first mail) as its header's first lines."""
    mails = sorted(p for p in folder.iterdir() if p.suffix in (".patch", ".eml", ".mbox") and p.is_file())
    if not mails:
        raise SeriesError(f"SERIES={folder} holds no .patch files (git format-patch writes NNNN-subject.patch)")
    first_id = ""
    with out.open("wb") as f:
        for n, p in enumerate(mails):
            data = p.read_bytes()
            if not data.startswith(b"From "):
                raise SeriesError(f"{p} does not start with a `From ` line: not a mail as git format-patch writes it")
            separator, rest = data.split(b"\n", 1)
            msg_id = str(_message(p).get("Message-Id", "")).strip()
            added = b""
            if not msg_id:
                msg_id = f"<{n}.{hashlib.sha256(data).hexdigest()[:16]}@nvme-hotswap.local>"
                added += f"Message-Id: {msg_id}\n".encode()
            if n and first_id and b"\nIn-Reply-To:" not in rest.split(b"\n\n", 1)[0]:
                added += f"In-Reply-To: {first_id}\nReferences: {first_id}\n".encode()
            first_id = first_id or msg_id
            f.write(separator + b"\n" + added + rest + (b"" if rest.endswith(b"\n") else b"\n"))
    return out


def _mbox_of_range(spec: str, qemu_src: Path, out: Path) -> Path:
    """`base..tip` of QEMU_SRC through git format-patch (threaded, so every patch has a Message-Id)."""
    folder = out.parent / "format-patch"
    shutil.rmtree(folder, ignore_errors=True)
    _run(["git", "-C", str(qemu_src), "format-patch", "-q", "--thread=shallow", "-o", str(folder), spec],
         f"git format-patch {spec} in QEMU_SRC={qemu_src}")
    return _mbox_of_folder(folder, out)


def is_range(spec: str) -> bool:
    return ".." in spec and not Path(spec).exists()


def base_of_range(spec: str) -> str:
    return spec.split("..", 1)[0]


def read(spec: str, work: Path, qemu_src: Path | None = None) -> Series:
    """Read SERIES=`spec` into `work`/ (b4's output, one mail per patch)."""
    work.mkdir(parents=True, exist_ok=True)
    path = Path(spec).expanduser()
    b4 = b4_binary()
    b4_out = work / "b4"
    shutil.rmtree(b4_out, ignore_errors=True)
    if path.is_file():
        mbox = path.resolve()
    elif path.is_dir():
        mbox = _mbox_of_folder(path, work / "series.mbox")
    elif is_range(spec):
        if qemu_src is None:
            raise SeriesError(f"SERIES={spec} looks like a git range; set QEMU_SRC to the QEMU checkout that has it")
        mbox = _mbox_of_range(spec, qemu_src, work / "series.mbox")
    elif "@" in spec and "/" not in spec:
        msgid = spec.strip("<>")
        try:
            _run([str(b4), "am", "-o", str(b4_out), "-n", "series", msgid], f"b4 am {msgid}")
        except SeriesError as exc:
            raise SeriesError(f"{exc}\nb4 could not fetch <{msgid}> (lore.kernel.org is not reachable from "
                              "here); save the thread as an mbox from your mail client, or on a machine with "
                              "access run `b4 mbox <msgid>`, and pass SERIES=<that file>") from exc
        mbox = b4_out / "series.mbx"
    else:
        raise SeriesError(f"SERIES={spec!r} is not a file, a folder, a git range (base..tip, with QEMU_SRC) nor "
                          "a Message-Id")
    if not (b4_out / "series.mbx").exists():
        proc = _run([str(b4), "--offline-mode", "am", "-m", str(mbox), "-o", str(b4_out), "-n", "series"],
                    f"b4 am -m {mbox}")
        if not (b4_out / "series.mbx").exists():
            raise SeriesError(f"b4 found no patches in {mbox}:\n{proc.stderr.strip()[-800:]}")
    return _split(spec, b4_out, work / "mails")


def _split(spec: str, b4_out: Path, mails: Path) -> Series:
    shutil.rmtree(mails, ignore_errors=True)
    mails.mkdir(parents=True)
    _run(["git", "mailsplit", "-o" + str(mails), str(b4_out / "series.mbx")], "git mailsplit")
    patches = []
    version = 1
    for i, mail in enumerate(sorted(mails.iterdir()), 1):
        msg = _message(mail)
        subject, version, _ = strip_prefix(str(msg.get("Subject", "")))
        named = mail.with_name(f"{i:04d}.patch")
        mail.rename(named)
        patches.append(Patch(i, subject, str(msg.get("Message-Id", "")).strip(), named))
    if not patches:
        raise SeriesError(f"SERIES={spec}: b4's mbox holds no patch")
    cover = b4_out / "series.cover"
    cover_id, subject, hint = "", "", ""
    if cover.exists():
        msg = _message(cover)
        cover_id, subject = str(msg.get("Message-Id", "")).strip(), " ".join(str(msg.get("Subject", "")).split())
        text = _body(msg)
        if (m := BASE_COMMIT.search(text)) is not None:
            hint = f"base-commit: {m.group('sha')}"
        elif (m2 := BASED_ON.search(text)) is not None:
            hint = f"Based-on: {m2.group('ref')}"
    if not subject:
        subject = " ".join(str(_message(patches[0].mail).get("Subject", "")).split())
    return Series(spec, subject, version, tuple(patches), cover_id, hint)
