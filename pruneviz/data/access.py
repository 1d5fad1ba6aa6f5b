"""Who may use a served app: the classroom's access secret and the addresses it listens on.

pruneviz serves one local user by default: the app listens on 127.0.0.1 and has no login.
A teacher who serves it to a room starts it in classroom mode (`pruneviz serve
--classroom`), which needs an access secret: a code of at least `MIN_SECRET` characters
given in the environment (`SECRET_ENV`) or in a file, or Streamlit's OpenID Connect login
configured in `.streamlit/secrets.toml` (an `[auth]` table). These rules are shared by the
launcher, which refuses to start without a secret, and by the app's login gate, which
refuses every session that has not given it.

The secret is never kept in memory as given once read: only its SHA-256 digest, and a
guess is compared with `hmac.compare_digest` on digests, so the comparison takes the same
time whatever the guess (and whatever its length).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pruneviz.errors import PrunevizError
from pruneviz.i18n import _

SECRET_ENV = "PRUNEVIZ_CLASSROOM_SECRET"  # noqa: S105 - a variable's name
CLASSROOM_FLAG = "--classroom"  # among the app's start arguments: serve to a room
MIN_SECRET = 12  # characters: `secrets.token_urlsafe(12)` gives 16
MAX_SECRET = 1024
LOCAL_NAMES = ("localhost",)
MAKE_ONE_HINT = (  # how to make an access secret
    'export PRUNEVIZ_CLASSROOM_SECRET="$(python3 -c '
    "'import secrets; print(secrets.token_urlsafe(12))')\"")


def digest(secret: str) -> bytes:
    """What is kept of a secret: its SHA-256 digest."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def matches(guess: str, expected: bytes) -> bool:
    """Whether `guess` is the secret whose digest is `expected`, in constant time."""
    if len(guess) > MAX_SECRET:
        return False
    return hmac.compare_digest(digest(guess), expected)


def check_secret(secret: str, where: str) -> str:
    """`secret` stripped of surrounding white space, if it is strong enough to guard a room;
    otherwise a PrunevizError saying why and how to make one."""
    secret = secret.strip()
    if len(secret) < MIN_SECRET:
        raise PrunevizError(
            f"the access secret in {where} is {len(secret)} characters long; a classroom "
            f"needs at least {MIN_SECRET}. Make one with: {MAKE_ONE_HINT}")
    if len(secret) > MAX_SECRET:
        raise PrunevizError(f"the access secret in {where} is longer than {MAX_SECRET} "
                            "characters: use a shorter one")
    return secret


def read_secret_file(path: Path) -> str:
    """The secret kept in `path` (its first line), checked; a clear error if unreadable."""
    try:
        if path.stat().st_size > MAX_SECRET + 2:
            raise PrunevizError(f"{path} is not a secret file: it is larger than "
                                f"{MAX_SECRET} characters")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PrunevizError(f"cannot read the secret file {path}: {exc}") from None
    lines = text.splitlines()
    return check_secret(lines[0] if lines else "", str(path))


def oidc_configured(folders: tuple[Path, ...]) -> bool:
    """Whether Streamlit's OpenID Connect login is configured: an `[auth]` table with a
    `redirect_uri` and `cookie_secret` in a `.streamlit/secrets.toml` of `folders`, and
    Authlib (which Streamlit's login needs) installed."""
    for folder in folders:
        path = folder / ".streamlit" / "secrets.toml"
        try:
            auth = tomllib.loads(path.read_text(encoding="utf-8")).get("auth")
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        if isinstance(auth, dict) and auth.get("redirect_uri") and auth.get("cookie_secret"):
            return importlib.util.find_spec("authlib") is not None
    return False


def is_local(address: str) -> bool:
    """Whether a server listening on `address` can only be reached from this machine. An
    empty address is Streamlit's default: every interface, so not local."""
    if address in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    """How this server admits people.

    `classroom`: it serves a room, and every session must log in first. `secret`: the
    digest of the access code (None with OpenID Connect only). `oidc`: Streamlit's login is
    configured. `refused`: why nobody may use it (then the app shows only that)."""

    classroom: bool = False
    secret: bytes | None = None
    oidc: bool = False
    refused: str | None = None


def server_access(app_args: list[str], env: Mapping[str, str], address: str,
                  oidc: bool) -> Access:
    """The access rules of a server started with `app_args` (the app's own arguments),
    environment `env`, listening on `address`: open and local by default; classroom mode
    with a secret or OpenID Connect; refused if served beyond this machine without
    classroom mode, or in classroom mode without a usable secret."""
    if CLASSROOM_FLAG not in app_args:
        if is_local(address):
            return Access()
        return Access(refused=_(
            "This server listens on {address}, beyond this machine, without classroom mode, "
            "so it admits nobody. Serve a room with `python -m pruneviz serve --classroom "
            "--address ADDRESS` and an access secret (see docs/classroom.md), or keep the "
            "default address 127.0.0.1.").format(
                address=address or _("every network interface")))
    given = env.get(SECRET_ENV, "")
    if not given and oidc:
        return Access(classroom=True, oidc=True)
    try:
        secret = check_secret(given, SECRET_ENV)
    except PrunevizError as exc:
        return Access(classroom=True, oidc=oidc,
                      refused=_("Classroom mode without a usable access secret: {reason}. "
                                "The teacher must restart the server with one.")
                      .format(reason=exc))
    return Access(classroom=True, secret=digest(secret), oidc=oidc)


def secret_from(env: Mapping[str, str], secret_file: Path | None) -> str | None:
    """The launcher's secret: from `secret_file` if given, else from the environment
    (checked); None if neither holds one."""
    if secret_file is not None:
        return read_secret_file(secret_file)
    given = env.get(SECRET_ENV, "")
    return check_secret(given, SECRET_ENV) if given else None

