"""The one reader of secret files (`…File` keys) for every service.

The whole file is the secret, minus one trailing newline (`echo KEY > file` writes one);
other whitespace is kept, since it may be part of the secret. An empty secret, a file that
is not regular (a FIFO would hang the reader), one larger than 64 KiB, or one that is not
UTF-8 is a `ConfigError` naming the config file and the field.
"""

from __future__ import annotations

from pathlib import Path

from hydra_fleet.core.errors import ConfigError
from hydra_fleet.core.files import FileProblem, read_small_file

MAX_SECRET_BYTES = 64 * 1024


def read_secret(file: Path, source: str, field: str) -> str:
    """The secret in `file`; errors name `source` (the config file) and `field`."""
    try:
        data = read_small_file(file, MAX_SECRET_BYTES)
    except FileProblem as err:
        raise ConfigError(source, field, f"cannot read secret file {file}: {err.reason}") from err
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(source, field, f"secret file {file} is not UTF-8 text") from err
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    if not text.strip():
        raise ConfigError(source, field, f"secret file {file} is empty")
    if "\0" in text:
        raise ConfigError(source, field, f"secret file {file} contains a NUL byte")
    return text
