"""tltk's model container (``.tlt``), atomic file writes, and one loader for every model file kind.

A tltk ``.tlt`` is a zip archive holding the model (for Keras models one member ``model.keras``,
itself Keras 3's zip format) and ``metadata.json`` (model kind, class names, input shape, the
resolved spec, tltk version, creation time, plus anything the caller adds).  The zip comment
carries a magic string and ``metadata.json`` a ``container`` block with the format version and
the size and SHA-256 of every member, so damage inside the archive is reported, never loaded.

With a key the zip is sealed with authenticated encryption::

    offset size  content
    0      4     magic b"TLTK"
    4      1     format version (1)
    5      1     KDF id (1 = scrypt)
    6      1     log2(N) of scrypt
    7      1     r of scrypt
    8      1     p of scrypt
    9      1     reserved (0)
    10     16    salt (random)
    26     12    AES-GCM nonce (random)
    38     16    key check: SHA-256(b"tltk key check" || scrypt[32:64])[:16]
    54     8     length of ciphertext + tag (uint64 little-endian)
    62     4     CRC-32 of bytes 0..61 (little-endian)
    66     ...   AES-256-GCM(key = scrypt[0:32]) ciphertext of the zip, then the 16-byte tag;
                 the 66 header bytes are the associated data

The header CRC tells a damaged header from a wrong key, the key check tells a wrong key from a
damaged body, the stored length tells a truncated file, and the GCM tag catches any other change.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import hmac
import io
import json
import logging
import os
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tltk import __version__
from tltk.errors import InvalidInputError, ModelFileError, WrongKeyError
from tltk.fileio import atomic_write_bytes
from tltk.modelfile.legacy import USUAL_KEYS, decode_legacy, find_published_key, sniff_payload
from tltk.modelfile.reading import read_model_bytes
from tltk.modelfile.safety import check_archive_names, check_keras_payload, unsafe_member_name

if TYPE_CHECKING:  # pragma: no cover
    import keras

log = logging.getLogger(__name__)

MAGIC = b"TLTK"
FORMAT_VERSION = 1
CONTAINER_FORMAT = "tltk-container"
ZIP_COMMENT = b"tltk model container v1"
METADATA_MEMBER = "metadata.json"
KERAS_MEMBER = "model.keras"
KDF_SCRYPT = 1
#: scrypt cost of new files: N = 2**14, r = 8, p = 1 (16 MiB of memory, about 60 ms).
SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 14, 8, 1
_MAX_LOG2_N, _MAX_R, _MAX_P = 22, 32, 16
#: Most memory (bytes, 128 * r * N) a file's header may ask scrypt for: 32 times what tltk's own
#: files use, so a crafted header cannot make opening a file exhaust memory.
_MAX_SCRYPT_BYTES = 512 * 1024 * 1024

_HEAD = struct.Struct("<4sBBBBBB16s12s16sQ")
_CRC = struct.Struct("<I")
HEADER_BYTES = _HEAD.size + _CRC.size
_TAG_BYTES = 16
_KEY_CHECK_LABEL = b"tltk key check"
_NOT_ENCRYPTED_HINT = "pass -k/--key or set TLTK_KEY"


# ---- sealing -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _scrypt(key: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=64, n=2 ** log2_n, r=r, p=p).derive(key.encode("utf-8"))


def _key_check(derived: bytes) -> bytes:
    return hashlib.sha256(_KEY_CHECK_LABEL + derived[32:]).digest()[:16]


def _seal(plain: bytes, key: str) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    salt, nonce = os.urandom(16), os.urandom(12)
    derived = _scrypt(key, salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)
    head = _HEAD.pack(MAGIC, FORMAT_VERSION, KDF_SCRYPT, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P, 0, salt, nonce,
                      _key_check(derived), len(plain) + _TAG_BYTES)
    header = head + _CRC.pack(zlib.crc32(head))
    return header + AESGCM(derived[:32]).encrypt(nonce, plain, header)


def _parse_header(data: bytes, source: str) -> dict[str, Any]:
    if len(data) < HEADER_BYTES:
        raise ModelFileError(f"{source}: truncated: the file is {len(data)} bytes, shorter than the "
                             f"{HEADER_BYTES}-byte header of an encrypted tltk model")
    head = data[:_HEAD.size]
    (crc,) = _CRC.unpack_from(data, _HEAD.size)
    if zlib.crc32(head) != crc:
        raise ModelFileError(f"{source}: damaged: the header of this encrypted tltk model fails its checksum "
                             "(a byte was changed); restore the file from a good copy")
    magic, version, kdf, log2_n, r, p, _, salt, nonce, check, body_len = _HEAD.unpack(head)
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{source}: container format version {version} is not supported by tltk {__version__} "
                             f"(it reads version {FORMAT_VERSION})", hint="upgrade tltk to read this file")
    if (kdf != KDF_SCRYPT or not (1 <= log2_n <= _MAX_LOG2_N and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P)
            or 128 * r * 2 ** log2_n > _MAX_SCRYPT_BYTES):
        raise ModelFileError(f"{source}: unsupported key-derivation settings (kdf {kdf}, log2 N {log2_n}, r {r}, "
                             f"p {p})", hint="upgrade tltk to read this file")
    return {"version": version, "kdf": "scrypt", "log2_n": log2_n, "r": r, "p": p, "salt": salt,
            "nonce": nonce, "key_check": check, "body_bytes": body_len, "header": data[:HEADER_BYTES]}


def _unseal(data: bytes, key: str | None, source: str) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    head = _parse_header(data, source)
    expected = HEADER_BYTES + head["body_bytes"]
    if len(data) < expected:
        raise ModelFileError(f"{source}: truncated: the file is {len(data)} bytes but its header says "
                             f"{expected}; it was cut short (interrupted copy or download?)")
    if len(data) > expected:
        raise ModelFileError(f"{source}: damaged: {len(data) - expected} unexpected bytes after the end of "
                             f"the encrypted model ({expected} bytes)")
    if not key:
        raise WrongKeyError(f"{source}: this model is encrypted; {_NOT_ENCRYPTED_HINT}")
    derived = _scrypt(key, head["salt"], head["log2_n"], head["r"], head["p"])
    if not hmac.compare_digest(_key_check(derived), head["key_check"]):
        raise WrongKeyError(f"{source}: the key does not open this model (it was encrypted with another key)",
                            hint="pass the key used when the model was trained (-k/--key or TLTK_KEY)")
    try:
        return AESGCM(derived[:32]).decrypt(head["nonce"], data[HEADER_BYTES:], head["header"])
    except InvalidTag:
        raise ModelFileError(f"{source}: damaged or tampered with: the encrypted model fails its integrity check "
                             "(the key is right, but bytes of the file were changed); nothing of it was used; "
                             "restore it from a good copy") from None


# ---- the zip inside ----------------------------------------------------------------------------

def _check_member_name(name: Any) -> str:
    if not isinstance(name, str) or not name or name == METADATA_MEMBER:
        raise ValueError(f"invalid container member name {name!r} ({METADATA_MEMBER!r} is reserved)")
    why = unsafe_member_name(name)
    if why is not None or name.endswith("/"):
        raise ValueError(f"invalid container member name {name!r} ({why or 'a folder'}): use a relative "
                         "path without '..'")
    return name


def _build_zip(members: dict[str, bytes], metadata: dict[str, Any]) -> bytes:
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
    table = {}
    for name, content in members.items():
        _check_member_name(name)
        if not isinstance(content, (bytes, bytearray, memoryview)):
            raise TypeError(f"container member {name!r} must be bytes, not {type(content).__name__}")
        table[name] = {"bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    meta = dict(metadata)
    meta.setdefault("tltk_version", __version__)
    meta.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    meta["container"] = {"format": CONTAINER_FORMAT, "format_version": FORMAT_VERSION, "members": table}
    try:
        meta_text = json.dumps(meta, indent=2, sort_keys=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"container metadata must be JSON-serialisable: {exc}") from exc
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.comment = ZIP_COMMENT
        zf.writestr(zipfile.ZipInfo(METADATA_MEMBER, _zip_time()), meta_text.encode("utf-8"),
                    compress_type=zipfile.ZIP_DEFLATED)
        for name, content in members.items():
            already_packed = bytes(content[:8]).startswith((b"PK\x03\x04", b"\x89HDF\r\n\x1a\n"))
            zf.writestr(zipfile.ZipInfo(name, _zip_time()), bytes(content),
                        compress_type=zipfile.ZIP_STORED if already_packed else zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def _zip_time() -> tuple[int, int, int, int, int, int]:
    now = _dt.datetime.now()
    return (max(now.year, 1980), now.month, now.day, now.hour, now.minute, now.second)


def _damaged_zip(source: str, exc: BaseException) -> ModelFileError:
    return ModelFileError(f"{source}: damaged or truncated: the model archive cannot be read ({exc}); "
                          "restore it from a good copy")


def _tltk_zip_metadata(zf: zipfile.ZipFile) -> dict[str, Any] | None:
    """The metadata of a tltk zip, None when the zip is not a tltk container."""
    if METADATA_MEMBER not in zf.namelist():
        return None
    meta = json.loads(zf.read(METADATA_MEMBER).decode("utf-8"))
    block = meta.get("container") if isinstance(meta, dict) else None
    if not isinstance(block, dict) or block.get("format") != CONTAINER_FORMAT:
        return None
    return meta


def _check_zip_end(data: bytes, source: str) -> None:
    end = data.rfind(b"PK\x05\x06")
    if end < 0 or end + 22 > len(data):
        raise ModelFileError(f"{source}: damaged or truncated: the end of the model archive is missing; "
                             "restore it from a good copy")
    (comment_len,) = struct.unpack_from("<H", data, end + 20)
    if end + 22 + comment_len != len(data):
        raise ModelFileError(f"{source}: damaged or truncated: the model archive's end record says "
                             f"{end + 22 + comment_len} bytes, the file has {len(data)}; restore it from a good copy")


def _parse_zip(data: bytes, source: str) -> tuple[dict[str, bytes], dict[str, Any]]:
    _check_zip_end(data, source)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            check_archive_names(zf.namelist(), source)
            try:
                meta = _tltk_zip_metadata(zf)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ModelFileError(f"{source}: damaged: {METADATA_MEMBER} is not valid JSON ({exc})") from None
            if meta is None:
                hint = ("for a Keras .keras file use load_keras_model; for a legacy TAO file use "
                        "`tltk model decode`" if zf.comment != ZIP_COMMENT else None)
                raise ModelFileError(f"{source}: a zip archive, but not a tltk model container (no tltk "
                                     f"{METADATA_MEMBER})", hint=hint)
            block = meta["container"]
            version = block.get("format_version")
            if version != FORMAT_VERSION:
                raise ModelFileError(f"{source}: container format version {version} is not supported by tltk "
                                     f"{__version__}", hint="upgrade tltk to read this file")
            table = block.get("members")
            if not isinstance(table, dict):
                raise ModelFileError(f"{source}: damaged: {METADATA_MEMBER} has no member table")
            names = set(zf.namelist()) - {METADATA_MEMBER}
            if names != set(table):
                missing = sorted(set(table) - names)
                extra = sorted(names - set(table))
                raise ModelFileError(f"{source}: damaged or tampered with: the archive members do not match "
                                     f"its table (missing {missing}, unexpected {extra})")
            members = {}
            for name, entry in table.items():
                content = zf.read(name)
                if len(content) != entry.get("bytes") or hashlib.sha256(content).hexdigest() != entry.get("sha256"):
                    raise ModelFileError(f"{source}: damaged or tampered with: member {name!r} does not match "
                                         "its recorded size and SHA-256; nothing of it was used")
                members[name] = content
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError,
            KeyError, NotImplementedError) as exc:
        raise _damaged_zip(source, exc) from None
    return members, meta


def _read_bytes(path: str | os.PathLike[str]) -> tuple[bytes, str]:
    return read_model_bytes(path), os.fspath(path)


def _container_from_bytes(data: bytes, source: str, key: str | None) -> tuple[dict[str, bytes], dict[str, Any]]:
    if not data:
        raise ModelFileError(f"{source}: the file is empty (0 bytes); it is not a model")
    if data.startswith(MAGIC):
        return _parse_zip(_unseal(data, key, source), source)
    if len(data) < len(MAGIC) and MAGIC.startswith(data):
        raise ModelFileError(f"{source}: truncated: only the first {len(data)} bytes of an encrypted tltk model "
                             "are left")
    if data.startswith(b"PK"):
        members, meta = _parse_zip(data, source)
        if key:
            log.warning("%s is not encrypted; the key is not needed and was ignored", source)
        return members, meta
    raise ModelFileError(f"{source}: not a tltk model container (it starts with neither the tltk magic "
                         "nor a zip signature)",
                         hint="legacy TAO .tlt/.etlt files are read by load_any_model_file or `tltk model decode`")


# ---- public API --------------------------------------------------------------------------------

def write_container(path: str | os.PathLike[str], members: dict[str, bytes], metadata: dict[str, Any],
                    key: str | None = None) -> None:
    """Write a tltk ``.tlt`` container atomically.

    Args:
        path: output file (``.tlt`` by convention).
        members: archive member name -> content, e.g. ``{"model.keras": b"..."}``.  Names are
            relative paths; ``metadata.json`` is reserved.
        metadata: JSON-serialisable facts about the model.  Conventional keys: ``model``
            (``"detectnet_v2"``/``"mask_rcnn"``), ``class_names`` (list of str), ``input_shape``
            (``[C, H, W]``), ``spec`` (the resolved spec text).  ``tltk_version`` and ``created``
            (UTC, ISO 8601) are added when absent; a ``container`` block (format version, member
            sizes and SHA-256) is always written.
        key: seal the file with this key (AES-256-GCM, scrypt); ``None`` or ``""`` writes a
            plain zip.
    """
    plain = _build_zip(members, metadata)
    atomic_write_bytes(path, _seal(plain, key) if key else plain)


def read_container(path: str | os.PathLike[str], key: str | None = None) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Read a tltk ``.tlt`` container, checking its integrity.

    Args:
        path: the file.
        key: the key it was sealed with; ignored (with a warning) for an unsealed file.

    Returns:
        ``(members, metadata)``: member name -> bytes, and the metadata dict as written
        (including ``tltk_version``, ``created`` and the ``container`` block).

    Raises:
        WrongKeyError: the file is sealed and the key is missing or wrong.
        ModelFileError: the file is empty, truncated, changed, or not a tltk container.
        InvalidInputError: the file does not exist or cannot be read.
    """
    data, source = _read_bytes(path)
    return _container_from_bytes(data, source, key)


def read_metadata(path: str | os.PathLike[str], key: str | None = None) -> dict[str, Any]:
    """The metadata of a tltk ``.tlt`` container (see :func:`read_container`).

    Args:
        path: the file.
        key: the key it was sealed with.

    Returns:
        The metadata dict.
    """
    return read_container(path, key)[1]


def container_info(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What can be said about a tltk container without its key.

    Args:
        path: the file.

    Returns:
        ``None`` when the file is not a tltk container; otherwise a dict with ``sealed`` (bool),
        ``format_version``, ``bytes`` (file size) and, for sealed files, ``kdf`` (``"scrypt"``),
        ``scrypt`` (``{"n", "r", "p"}``) and ``payload_bytes`` (encrypted zip size incl. tag).

    Raises:
        ModelFileError: the file starts like a sealed container but its header is damaged.
    """
    data, source = _read_bytes(path)
    if data.startswith(MAGIC):
        head = _parse_header(data, source)
        return {"sealed": True, "format_version": head["version"], "bytes": len(data), "kdf": head["kdf"],
                "scrypt": {"n": 2 ** head["log2_n"], "r": head["r"], "p": head["p"]},
                "payload_bytes": head["body_bytes"]}
    if data.startswith(b"PK"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                meta = _tltk_zip_metadata(zf)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, UnicodeDecodeError):
            return None
        if meta is None:
            return None
        return {"sealed": False, "format_version": meta["container"].get("format_version"), "bytes": len(data)}
    return None


def save_keras_model(path: str | os.PathLike[str], model: keras.Model, metadata: dict[str, Any],
                     key: str | None = None) -> None:
    """Save a Keras model in a tltk ``.tlt`` container (member ``model.keras``).

    Args:
        path: output file.
        model: the Keras 3 model (saved with ``model.save`` in the ``.keras`` format).
        metadata: see :func:`write_container`; ``keras_version`` and ``keras_model`` (the member
            name) are added.
        key: seal with this key; ``None`` writes a plain container.
    """
    import keras

    with tempfile.TemporaryDirectory(prefix="tltk-save-") as tmp:
        tmp_path = os.path.join(tmp, KERAS_MEMBER)
        model.save(tmp_path)
        with open(tmp_path, "rb") as fh:
            content = fh.read()
    meta = dict(metadata)
    meta.setdefault("keras_version", keras.__version__)
    meta["keras_model"] = KERAS_MEMBER
    write_container(path, {KERAS_MEMBER: content}, meta, key)


def find_keras_member(members: dict[str, bytes], metadata: dict[str, Any], source: str = "<container>") -> str:
    """The name of the Keras model member of a tltk container.

    Args:
        members: member name -> bytes, as returned by :func:`read_container`.
        metadata: the container metadata; its ``keras_model`` entry names the member when present.
        source: file name, for the error message.

    Returns:
        The member name (``metadata["keras_model"]``, else the first ``.keras``/``.h5``/``.hdf5``
        member in name order).

    Raises:
        ModelFileError: the container holds no Keras model.
    """
    name = metadata.get("keras_model")
    if isinstance(name, str) and name in members:
        return name
    for candidate in sorted(members):
        if os.path.splitext(candidate)[1].lower() in (".keras", ".h5", ".hdf5"):
            return candidate
    raise ModelFileError(f"{source}: this tltk container holds no Keras model (members: {sorted(members)})")


def check_model_kind(metadata: Mapping[str, Any], model: str, source: str) -> None:
    """Refuse a model file whose metadata names another model kind than the command's ``model``.

    Files without a recorded kind (plain Keras files, legacy TAO files) pass: their layers are
    checked by the model's Task.

    Raises:
        InvalidInputError: ``metadata["model_kind"]`` is set and is not ``model``.
    """
    kind = metadata.get("model_kind")
    if kind not in (None, model):
        raise InvalidInputError(f"{source} holds a {kind} model, not a {model} model",
                                hint=f"use `tltk {kind} ...` for it")


def load_keras_model(path: str | os.PathLike[str], key: str | None = None,
                     custom_objects: dict[str, Any] | None = None,
                     compile: bool = False) -> tuple[keras.Model, dict[str, Any]]:
    """Load a Keras model from a tltk ``.tlt``, a ``.keras`` file, a Keras HDF5 file or a legacy
    TAO ``.tlt`` (encrypted Keras HDF5).  The kind is found from the content, not the extension.

    Args:
        path: the model file.
        key: key of a sealed tltk container or a legacy TAO ``.tlt``.
        custom_objects: custom layers/functions for Keras deserialisation (tltk's own layers,
            e.g. the QAT layers of :mod:`tltk.core.qat`, are always known).
        compile: restore the training configuration too (off by default: tltk compiles models
            itself).

    Returns:
        ``(model, metadata)``: the model and the container metadata (for plain and legacy files,
        the description returned by :func:`load_any_model_file`).

    Raises:
        WrongKeyError, ModelFileError: see :func:`load_any_model_file`; also when the file holds
            no Keras model or Keras cannot rebuild it.
    """
    source = os.fspath(path)
    kind, content, info = load_any_model_file(source, key)
    if kind == "tltk":
        assert isinstance(content, dict)
        member = find_keras_member(content, info, source)
        blob = content[member]
        payload_kind = sniff_payload(blob)
        if payload_kind not in ("zip", "hdf5"):
            raise ModelFileError(f"{source}: damaged: the container member {member!r} is neither a Keras "
                                 "model archive nor a Keras HDF5 file")
        payload_kind = "keras" if payload_kind == "zip" else "hdf5"
    elif kind in ("keras", "hdf5") and isinstance(content, bytes):
        blob, payload_kind = content, kind
    else:
        raise ModelFileError(f"{source}: holds a {kind.upper()} model, not a Keras model "
                             "(expected a .tlt, .keras or Keras .hdf5 file)",
                             hint="load ONNX/UFF models with an inference backend, not as Keras models")
    check_keras_payload(blob, payload_kind, source)
    import keras

    import tltk.core.qat  # noqa: F401  registers tltk's QAT layers so quantization-aware models load

    with tempfile.TemporaryDirectory(prefix="tltk-load-") as tmp:
        tmp_path = os.path.join(tmp, "model" + (".keras" if payload_kind == "keras" else ".h5"))
        with open(tmp_path, "wb") as fh:
            fh.write(blob)
        try:
            model = keras.models.load_model(tmp_path, custom_objects=custom_objects, compile=compile,
                                            safe_mode=True)
        except (ValueError, TypeError, KeyError, OSError, AttributeError, IndexError) as exc:
            raise ModelFileError(f"{source}: Keras cannot rebuild the model in this file ({type(exc).__name__}: "
                                 f"{_first_line(exc)})",
                                 hint="the file is damaged, or was written by another program or Keras version; "
                                      "models with custom layers need them in custom_objects") from exc
    return model, info


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _is_keras_zip(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return "config.json" in names and ("model.weights.h5" in names or "model.weights.npz" in names)


def _is_tltk_zip(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            if zf.comment == ZIP_COMMENT:
                return True
            return _tltk_zip_metadata(zf) is not None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError, UnicodeDecodeError):
        return False


def sniff_model_file(data: bytes) -> str:
    """Tell what a model file is from its content, without a key.

    Args:
        data: the file bytes.

    Returns:
        ``"tltk-sealed"`` (encrypted tltk container), ``"tltk"`` (plain tltk container),
        ``"keras"`` (Keras 3 ``.keras``), ``"hdf5"``, ``"onnx"``, ``"uff"``, ``"zip"`` (another
        zip, e.g. a TAO 5 MaskRCNN checkpoint), ``"damaged-zip"`` (starts like a zip but does
        not open), ``"empty"``, or ``"unknown"`` (possibly a legacy TAO file, which needs a key).
    """

    if not data:
        return "empty"
    if data.startswith(MAGIC):
        return "tltk-sealed"
    kind = sniff_payload(data)
    if kind == "zip":
        if _is_tltk_zip(data):
            return "tltk"
        return "keras" if _is_keras_zip(data) else "zip"
    if kind is not None:
        return kind
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        return "damaged-zip"
    return "unknown"


def load_any_model_file(path: str | os.PathLike[str], key: str | None = None
                        ) -> tuple[str, dict[str, bytes] | bytes, dict[str, Any]]:
    """Open any model file tltk understands; the kind is found from the content.

    Understood: tltk ``.tlt`` containers (sealed or not), legacy TAO ``.etlt``/``.tlt``/``.ckzip``
    (with the key), Keras 3 ``.keras``, Keras HDF5, ONNX, UFF and plain zips.

    Args:
        path: the file.
        key: key of a sealed tltk container or a legacy TAO file; not needed for plain files.

    Returns:
        ``(kind, content, info)``:

        * ``kind == "tltk"``: ``content`` is the member dict and ``info`` the container metadata;
        * otherwise ``kind`` is ``"keras"``, ``"hdf5"``, ``"onnx"``, ``"uff"`` or ``"zip"``,
          ``content`` the plain model bytes, and ``info`` ``{"container": "plain" | "legacy-etlt" |
          "legacy-tlt", "encrypted": bool, "input_name": str | None}`` (``input_name``: the
          ``.etlt`` header's input-node name).

    Raises:
        WrongKeyError: the file is encrypted and the key is missing or wrong.
        ModelFileError: the file is empty, truncated or damaged.
        InvalidInputError: the file does not exist or cannot be read.
    """

    data, source = _read_bytes(path)
    kind = sniff_model_file(data)
    if kind == "empty":
        raise ModelFileError(f"{source}: the file is empty (0 bytes); it is not a model")
    if kind in ("tltk-sealed", "tltk"):
        members, meta = _container_from_bytes(data, source, key)
        return "tltk", members, meta
    if kind == "damaged-zip":
        raise _damaged_zip(source, zipfile.BadZipFile("no readable central directory"))
    if kind != "unknown":
        if key:
            log.debug("%s is a plain %s file; the key is not needed", source, kind)
        return kind, data, {"container": "plain", "encrypted": False, "input_name": None}
    if not key:
        opener = find_published_key(data, source)
        hint = (f"it opens with the published key '{opener}': pass -k {opener}" if opener else
                f"{_NOT_ENCRYPTED_HINT}; NGC models use published keys such as {', '.join(USUAL_KEYS)}")
        raise WrongKeyError(f"{source}: not a plain model file (tltk .tlt, Keras, HDF5, ONNX, UFF); if it is a "
                            "legacy TAO .etlt/.tlt it is encrypted and needs its key", hint=hint)
    legacy = decode_legacy(data, key, source=source)
    payload_kind = "keras" if legacy.kind == "zip" and _is_keras_zip(legacy.payload) else legacy.kind
    return payload_kind, legacy.payload, {"container": f"legacy-{legacy.layout}", "encrypted": True,
                                          "input_name": legacy.input_name}
