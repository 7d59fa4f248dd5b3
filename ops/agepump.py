"""pyrage's pumps as a child process, between its stdin and its stdout.

``python -m ops.agepump encrypt RECIPIENT...``: plaintext in, age ciphertext out (public
keys only on the command line). ``python -m ops.agepump decrypt``: first a line with a
length N and N bytes of JSON (the identities' texts: secret, so never in argv or the
environment), then the ciphertext; plaintext out.

``ops.agecrypt`` runs these so that the cryptography has a core of its own: pyrage holds
the GIL while it works, which in our process stopped the thread that moves the exec stream
for as long (see the module docstring there).

Exit status 0 once the last byte is out. Otherwise one line on stderr: pyrage's message
(status 3: the ciphertext or the key; the parent words it for the user), or a key that
does not parse (status 2: the parent checked the keys first, so that is a bug).
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, Any

_BUFFER = 1024 * 1024  # pyrage reads 8 KiB at a time: from this buffer, not the pipe


def _identity(pyrage: Any, text: str) -> Any:
    if text.lstrip().startswith("-----BEGIN"):
        return pyrage.ssh.Identity.from_buffer(text.encode())
    return pyrage.x25519.Identity.from_str(text)


def _recipient(pyrage: Any, key: str) -> Any:
    return (pyrage.ssh if key.startswith("ssh-") else pyrage.x25519).Recipient.from_str(key)


def _pump(argv: list[str], plain_or_cipher: IO[bytes], out: IO[bytes]) -> None:
    import pyrage

    if argv[0] == "encrypt":
        recipients = [_recipient(pyrage, key) for key in argv[1:]]
        pyrage.encrypt_io(plain_or_cipher, out, recipients)
    else:
        size = int(plain_or_cipher.readline())
        identities = [_identity(pyrage, t) for t in json.loads(plain_or_cipher.read(size))]
        pyrage.decrypt_io(plain_or_cipher, out, identities)


def main(argv: list[str]) -> int:
    import pyrage

    if not argv or argv[0] not in ("encrypt", "decrypt"):
        print("usage: python -m ops.agepump encrypt RECIPIENT... | decrypt", file=sys.stderr)
        return 2
    with (
        open(sys.stdin.fileno(), "rb", buffering=_BUFFER, closefd=False) as source,
        open(sys.stdout.fileno(), "wb", buffering=_BUFFER, closefd=False) as out,
    ):
        try:
            _pump(argv, source, out)
        except (pyrage.RecipientError, pyrage.IdentityError, ValueError) as exc:
            print(f"agepump: a key does not parse: {exc}", file=sys.stderr)
            return 2
        except (pyrage.EncryptError, pyrage.DecryptError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # our own pipes' error (a real one has an errno; age's have none)
            print(" ".join(str(exc).split()), file=sys.stderr)
            return 3
        # pyrage writes its last chunk when its writer is dropped, which swallows errors;
        # flushing here makes a broken pipe fail us, visibly, with status 1.
        out.flush()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        # The parent stopped reading (it failed, was interrupted, or had enough).
        os._exit(1)
