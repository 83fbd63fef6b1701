"""The legacy TAO model codec: read and write ``.etlt`` and encrypted ``.tlt`` files.

TLT/TAO before version 5 stored models encrypted with a key string chosen by the user (NGC models
use published keys such as ``tlt_encode`` or ``nvidia_tlt``).  The scheme, confirmed byte for byte
on real NVIDIA-made ``.etlt`` files:

* key: PBKDF2-HMAC-SHA256 of the UTF-8 key string, 100 000 iterations, a fixed 32-byte salt,
  32-byte output (AES-256);
* cipher: AES-256-CTR whose 16-byte random nonce is the whole initial 128-bit counter block
  (big-endian increment over all 128 bits); the encrypted blob is ``nonce(16) || ciphertext``
  and the ciphertext is as long as the plaintext (no padding, no MAC);
* ``.etlt``: ``int32 little-endian L`` + ``L`` bytes of input-node name (UTF-8) + encrypted blob.
  ``L > 0`` (name ``input_1`` for DetectNet_v2) marks a UFF payload, ``L == 0`` an ONNX payload;
* encrypted ``.tlt`` (Keras HDF5) and ``.ckzip`` (zip of a TF checkpoint): the encrypted blob
  alone, with no header.

The scheme has no integrity check, so a wrong key silently gives garbage.  This module checks
what the decrypted bytes are (ONNX, UFF, HDF5 or zip, see :func:`sniff_payload`) and reports
anything else as :class:`~tltk.errors.WrongKeyError`.

This module depends on ``cryptography`` (and ``onnx`` for the ONNX check) only, never on
TensorFlow.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import struct
import zipfile
from dataclasses import dataclass

from tltk.errors import InvalidInputError, ModelFileError, WrongKeyError
from tltk.fileio import atomic_write_bytes
from tltk.modelfile.reading import read_model_bytes

log = logging.getLogger(__name__)

#: PBKDF2 salt of the legacy codec (32 bytes).
LEGACY_SALT = bytes.fromhex("cb3cdc2e858689da908563056a00dbed09ac076c785543c4610f06d31b53a732")
#: PBKDF2 iteration count of the legacy codec.
LEGACY_ITERATIONS = 100_000
#: Length of the AES-CTR nonce written in front of the ciphertext, in bytes.
NONCE_BYTES = 16
#: Keys published by NVIDIA for NGC models and used by default in TAO notebooks.
USUAL_KEYS = ("tlt_encode", "nvidia_tlt", "nvidia_tao")
#: Payload kinds recognised by :func:`sniff_payload`, with the file extension tltk gives them.
PAYLOAD_EXTENSIONS = {"onnx": ".onnx", "uff": ".uff", "hdf5": ".hdf5", "zip": ".zip"}

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_MAX_NAME_BYTES = 4096
_MIN_PAYLOAD_BYTES = 8


@dataclass(frozen=True)
class LegacyPayload:
    """The result of opening a legacy TAO file.

    Attributes:
        kind: what the plaintext is: ``"onnx"``, ``"uff"``, ``"hdf5"`` or ``"zip"``.
        payload: the plaintext model file (bytes).
        layout: ``"etlt"`` (length + input-name header) or ``"tlt"`` (no header).
        input_name: the input-node name from the ``.etlt`` header (``""`` for ONNX payloads);
            ``None`` for the ``"tlt"`` layout.
        nonce: the 16-byte AES-CTR nonce (initial counter block) the file was written with.
    """

    kind: str
    payload: bytes
    layout: str
    input_name: str | None
    nonce: bytes


# ---- key derivation and the cipher ------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def derive_legacy_key(key: str) -> bytes:
    """Stretch a TAO key string into the 32-byte AES key (cached per key string).

    Args:
        key: the key string (``-k`` in TAO), e.g. ``"tlt_encode"``; encoded as UTF-8.

    Returns:
        32 bytes: PBKDF2-HMAC-SHA256(key, LEGACY_SALT, 100 000 iterations).
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    if not isinstance(key, str):
        raise TypeError(f"key must be a str, not {type(key).__name__}")
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=LEGACY_SALT, iterations=LEGACY_ITERATIONS)
    return kdf.derive(key.encode("utf-8"))


def _ctr(key: str, nonce: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    cipher = Cipher(algorithms.AES(derive_legacy_key(key)), modes.CTR(nonce))
    enc = cipher.encryptor()
    return enc.update(data) + enc.finalize()


def encrypt_payload(plaintext: bytes, key: str, nonce: bytes | None = None) -> bytes:
    """Encrypt bytes with the legacy codec (the body of every ``.etlt``/``.tlt``).

    Args:
        plaintext: the model file bytes (any length, including 0).
        key: the key string.
        nonce: 16 bytes used as the initial counter block; random when omitted.  Pass the nonce
            of an existing file to reproduce it byte for byte.

    Returns:
        ``nonce || ciphertext``, ``16 + len(plaintext)`` bytes.
    """
    if nonce is None:
        nonce = os.urandom(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"the nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
    return bytes(nonce) + _ctr(key, bytes(nonce), bytes(plaintext))


def decrypt_payload(blob: bytes, key: str, source: str = "<bytes>") -> bytes:
    """Decrypt ``nonce || ciphertext`` with the legacy codec, without checking the result.

    A wrong key gives garbage of the same length; use :func:`decode_legacy` to have the result
    checked.

    Args:
        blob: the encrypted bytes, at least 16 long.
        key: the key string.
        source: name of the file, for error messages.

    Returns:
        The plaintext, ``len(blob) - 16`` bytes.

    Raises:
        ModelFileError: ``blob`` is shorter than the 16-byte nonce.
    """
    if len(blob) < NONCE_BYTES:
        raise ModelFileError(
            f"{source}: too short for a legacy TAO file ({len(blob)} bytes of encrypted data; "
            f"at least the {NONCE_BYTES}-byte nonce is needed); the file is truncated or not a TAO model")
    return _ctr(key, bytes(blob[:NONCE_BYTES]), bytes(blob[NONCE_BYTES:]))


# ---- file layouts ----------------------------------------------------------------------------

def encode_etlt(payload: bytes, key: str, input_name: str = "", nonce: bytes | None = None,
                check_payload: bool = True) -> bytes:
    """Build ``.etlt`` bytes as TAO's exporter wrote them (DeepStream ``tlt-encoded-model``).

    Args:
        payload: a plain ONNX or UFF model file.
        key: the key string (DeepStream ``tlt-model-key``).
        input_name: the input-node name written in the header.  Must be ``""`` for ONNX payloads
            (header length 0, as in TAO's ONNX ``.etlt`` files) and non-empty for UFF payloads
            (e.g. ``"input_1"``): readers pick the parser from the header length.
        nonce: 16-byte nonce, random when omitted.
        check_payload: refuse payloads that are not ONNX/UFF and names that do not match the
            kind (switch off only to build test vectors).

    Returns:
        ``int32 LE len(name) || name || nonce || ciphertext``.

    Raises:
        InvalidInputError: the payload is not ONNX or UFF, or the name does not match the kind.
    """
    name = input_name.encode("utf-8")
    if not check_payload:
        return struct.pack("<i", len(name)) + name + encrypt_payload(payload, key, nonce)
    kind = sniff_payload(payload)
    if kind not in ("onnx", "uff"):
        raise InvalidInputError(
            f"an .etlt holds an ONNX or UFF model, but the payload is {kind or 'not a recognised model file'}",
            hint="write Keras HDF5 models and checkpoint zips with encode_tlt (no header)")
    if kind == "onnx" and name:
        raise InvalidInputError(
            f"an ONNX .etlt must have an empty input name (header length 0), got {input_name!r}: "
            "TensorRT/DeepStream would try to parse it as UFF")
    if kind == "uff" and not name:
        raise InvalidInputError("a UFF .etlt needs the input-node name in its header (e.g. 'input_1')")
    return struct.pack("<i", len(name)) + name + encrypt_payload(payload, key, nonce)


def encode_tlt(payload: bytes, key: str, nonce: bytes | None = None) -> bytes:
    """Build an encrypted legacy ``.tlt``/``.ckzip``: the encrypted blob with no header.

    Args:
        payload: a Keras HDF5 file (``.tlt``) or a zip of a TF checkpoint (``.ckzip``).
        key: the key string.
        nonce: 16-byte nonce, random when omitted.

    Returns:
        ``nonce || ciphertext``.
    """
    return encrypt_payload(payload, key, nonce)


def read_etlt_header(data: bytes, source: str = "<bytes>") -> tuple[str, int]:
    """Parse the ``.etlt`` header.

    Args:
        data: the file bytes.
        source: name of the file, for error messages.

    Returns:
        ``(input_name, offset)``: the header's input-node name and the offset of the nonce.

    Raises:
        ModelFileError: the header is cut short or its length field is impossible.
    """
    if len(data) < 4:
        raise ModelFileError(f"{source}: too short for an .etlt ({len(data)} bytes; the header alone needs 4)")
    (length,) = struct.unpack_from("<i", data, 0)
    if length < 0 or length > _MAX_NAME_BYTES or 4 + length + NONCE_BYTES > len(data):
        raise ModelFileError(
            f"{source}: not a valid .etlt header (input-name length field {length} for a {len(data)}-byte file); "
            "the file is truncated or not an .etlt")
    raw = bytes(data[4:4 + length])
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFileError(f"{source}: the .etlt input name is not UTF-8 text; the file is damaged "
                             "or not an .etlt") from None
    if not name.isprintable():
        raise ModelFileError(f"{source}: the .etlt input name {name!r} is not printable; the file is damaged "
                             "or not an .etlt")
    return name, 4 + length


def _layouts(source: str, layout: str) -> tuple[str, ...]:
    if layout in ("etlt", "tlt"):
        return (layout,)
    if layout != "auto":
        raise ValueError(f"layout must be 'auto', 'etlt' or 'tlt', got {layout!r}")
    if source.lower().endswith((".tlt", ".ckzip")):
        return ("tlt", "etlt")
    return ("etlt", "tlt")


def _split(data: bytes, layout: str, source: str) -> tuple[str | None, bytes] | None:
    if layout == "etlt":
        try:
            name, offset = read_etlt_header(data, source)
        except ModelFileError:
            return None
        return name, bytes(data[offset:])
    return None, bytes(data)


def _try_layout(data: bytes, key: str, layout: str, source: str) -> LegacyPayload | None:
    split = _split(data, layout, source)
    if split is None or len(split[1]) <= NONCE_BYTES:
        return None
    name, blob = split
    plaintext = decrypt_payload(blob, key, source)
    kind = sniff_payload(plaintext)
    if kind is None:
        return None
    if kind == "hdf5" and not _hdf5_opens(plaintext):
        return None
    if layout == "etlt" and name is not None and kind in ("onnx", "uff"):
        expected = "uff" if name else "onnx"
        if kind != expected:
            log.warning("%s: the header (input-name length %d) announces %s but the payload is %s",
                        source, len(name.encode("utf-8")), expected.upper(), kind.upper())
    return LegacyPayload(kind=kind, payload=plaintext, layout=layout, input_name=name,
                         nonce=blob[:NONCE_BYTES])


def _diagnose(data: bytes, key: str, layouts: tuple[str, ...], source: str) -> ModelFileError | None:
    """Why a file that did not decode is not simply opened with a wrong key, if it is not."""
    for layout in layouts:
        split = _split(data, layout, source)
        if split is None or len(split[1]) < NONCE_BYTES:
            continue
        blob = split[1]
        size = len(blob) - NONCE_BYTES
        if size == 0:
            return ModelFileError(f"{source}: the file holds no model (the encrypted payload after the "
                                  f"{'header and ' if layout == 'etlt' else ''}nonce is empty)")
        head = _ctr(key, blob[:NONCE_BYTES], blob[NONCE_BYTES:NONCE_BYTES + 64])
        kind = _prefix_kind(head)
        if kind is not None:
            name = kind.upper()
            article = "an" if name in ("ONNX", "HDF5") else "a"
            return ModelFileError(
                f"{source}: truncated or damaged: the key opens it (the payload starts like {article} {name} "
                f"model) but the {name} model does not parse to its end ({size} bytes)",
                hint="restore the file from a good copy")
        if size < _MIN_PAYLOAD_BYTES:
            return ModelFileError(f"{source}: truncated or not a TAO model: only {size} byte(s) follow the "
                                  "nonce, too few for any model file")
    return None


def decode_legacy(data: bytes, key: str, source: str = "<bytes>", layout: str = "auto") -> LegacyPayload:
    """Decrypt a legacy ``.etlt``/``.tlt`` and check that the result is a model file.

    Args:
        data: the file bytes.
        key: the key string.
        source: file name, for messages and for the layout guess (``.tlt``/``.ckzip`` try the
            header-less layout first).
        layout: ``"etlt"``, ``"tlt"`` or ``"auto"`` (try both).

    Returns:
        The decoded :class:`LegacyPayload`.

    Raises:
        ModelFileError: the file is empty, too short, holds an empty payload, has an impossible
            ``.etlt`` header (``layout="etlt"``), or decrypts to the start of a model that does
            not parse to its end (truncated or damaged).
        WrongKeyError: no layout decrypts to ONNX, UFF, HDF5 or zip with this key.
    """
    data = bytes(data)
    if len(data) == 0:
        raise ModelFileError(f"{source}: the file is empty")
    layouts = _layouts(source, layout)
    if len(data) < NONCE_BYTES:
        raise ModelFileError(
            f"{source}: too short for a legacy TAO file ({len(data)} bytes; at least a {NONCE_BYTES}-byte "
            "nonce is needed); the file is truncated or not a TAO model")
    if layout == "etlt":
        read_etlt_header(data, source)
    for candidate in layouts:
        result = _try_layout(data, key, candidate, source)
        if result is not None:
            return result
    problem = _diagnose(data, key, layouts, source)
    if problem is not None:
        raise problem
    raise _wrong_key(data, key, source, layouts)


def _wrong_key(data: bytes, key: str, source: str, layouts: tuple[str, ...]) -> WrongKeyError:
    opener = None
    for other in USUAL_KEYS:
        if other == key:
            continue
        if any(_try_layout(data, other, candidate, source) is not None for candidate in layouts):
            opener = other
            break
    if opener is not None:
        hint = f"this file opens with the published key '{opener}': pass -k {opener}"
    else:
        others = ", ".join(k for k in USUAL_KEYS if k != key)
        hint = (f"use the key the model was exported with; NGC models publish theirs on the model card "
                f"(usual keys: {others})")
    return WrongKeyError(
        f"the key does not open this file: {source} (decrypted with it, the bytes are not ONNX, UFF, HDF5 "
        "or zip; or the file is not a legacy TAO .etlt/.tlt model)", hint=hint)


def find_published_key(data: bytes, source: str = "<bytes>") -> str | None:
    """Which of the published keys (:data:`USUAL_KEYS`) opens a legacy file, if any.

    Args:
        data: the file bytes.
        source: file name, used for the layout guess.

    Returns:
        The first key of :data:`USUAL_KEYS` that decrypts ``data`` to a model file, else ``None``.
    """
    for key in USUAL_KEYS:
        for candidate in _layouts(source, "auto"):
            if _try_layout(data, key, candidate, source) is not None:
                return key
    return None


def decode_legacy_file(path: str | os.PathLike[str], key: str, layout: str = "auto") -> LegacyPayload:
    """Read and decode a legacy ``.etlt``/``.tlt``/``.ckzip`` file.

    Args:
        path: the file.
        key: the key string.
        layout: ``"etlt"``, ``"tlt"`` or ``"auto"``.

    Returns:
        The decoded :class:`LegacyPayload`.

    Raises:
        InvalidInputError: the file does not exist or cannot be read.
        ModelFileError, WrongKeyError: see :func:`decode_legacy`.
    """
    source = os.fspath(path)
    return decode_legacy(read_model_bytes(source), key, source=source, layout=layout)


def write_etlt(path: str | os.PathLike[str], payload: bytes, key: str, input_name: str = "",
               nonce: bytes | None = None) -> None:
    """Write an ``.etlt`` atomically (see :func:`encode_etlt`).

    Args:
        path: output file.
        payload: plain ONNX or UFF model bytes.
        key: the key string.
        input_name: header input name (``""`` for ONNX).
        nonce: 16-byte nonce, random when omitted.
    """
    atomic_write_bytes(path, encode_etlt(payload, key, input_name, nonce))


def write_legacy_tlt(path: str | os.PathLike[str], payload: bytes, key: str, nonce: bytes | None = None) -> None:
    """Write an encrypted legacy ``.tlt``/``.ckzip`` atomically (see :func:`encode_tlt`).

    Args:
        path: output file.
        payload: Keras HDF5 bytes or a checkpoint zip.
        key: the key string.
        nonce: 16-byte nonce, random when omitted.
    """
    atomic_write_bytes(path, encode_tlt(payload, key, nonce))


# ---- what is this payload? -------------------------------------------------------------------

class _WireError(Exception):
    pass


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _WireError
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _walk(buf: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """Top-level protobuf fields of ``buf[start:end]``: (field, wire type, value or offset, length).

    Raises _WireError unless the bytes are a sequence of well-formed fields ending exactly at ``end``.
    """
    fields = []
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise _WireError
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            fields.append((field, wire, value, 0))
        elif wire == 1:
            if pos + 8 > end:
                raise _WireError
            fields.append((field, wire, pos, 8))
            pos += 8
        elif wire == 5:
            if pos + 4 > end:
                raise _WireError
            fields.append((field, wire, pos, 4))
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _WireError
            fields.append((field, wire, pos, length))
            pos += length
        else:
            raise _WireError
    return fields


def _is_onnx(data: bytes) -> bool:
    if len(data) < 4 or data[0] != 0x08:
        return False
    try:
        fields = _walk(data, 0, len(data))
    except _WireError:
        return False
    first = fields[0]
    if not (first[0] == 1 and first[1] == 0 and 1 <= first[2] <= 64):
        return False
    seen = {(f, w) for f, w, _, _ in fields}
    if (7, 2) not in seen or (2, 0) in seen:
        return False
    try:
        import onnx
    except ImportError:  # onnx is a hard dependency; the wire check alone is already strict
        return True
    try:
        model = onnx.load_model_from_string(bytes(data))
    except Exception:
        return False
    return model.HasField("graph")


def _is_uff(data: bytes) -> bool:
    if len(data) < 4 or data[0] != 0x08:
        return False
    try:
        fields = _walk(data, 0, len(data))
    except _WireError:
        return False
    first = fields[0]
    if not (first[0] == 1 and first[1] == 0):
        return False
    seen = {(f, w) for f, w, _, _ in fields}
    if not {(2, 0), (4, 2)} <= seen or (7, 2) in seen:
        return False
    for field, wire, offset, length in fields:
        if field == 4 and wire == 2:
            try:
                _walk(data, offset, offset + length)
            except _WireError:
                return False
    return True


def _is_zip(data: bytes) -> bool:
    if not data.startswith(ZIP_MAGICS):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            zf.infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        return False
    return True


_ONNX_SECOND_TAGS = frozenset({0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42})


_PREFIXES = ((HDF5_MAGIC, "hdf5"), (b"PK\x03\x04", "zip"), (b"\x08\x01\x10\x01\x1a", "uff"))


def _prefix_kind(head: bytes) -> str | None:
    """What a plaintext looks like from its first bytes alone (for truncation reports)."""
    for signature, kind in _PREFIXES:
        if head[:len(signature)] == signature[:len(head)] and len(head) >= 2:
            return kind
    if len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 64 and head[2] in _ONNX_SECOND_TAGS:
        if head[2] in (0x12, 0x1A) and len(head) >= 4:  # producer name/version: short printable text
            text = head[4:4 + head[3]]
            if head[3] > 127 or not all(0x20 <= c < 0x7F for c in text):
                return None
        return "onnx"
    return None


def _hdf5_opens(data: bytes) -> bool:
    try:
        import h5py
    except ImportError:  # h5py is a hard dependency; the signature check alone then decides
        return True
    try:
        with h5py.File(io.BytesIO(data), "r"):
            return True
    except Exception:
        return False


def sniff_payload(data: bytes) -> str | None:
    """Tell what a plain model file is from its content.

    Args:
        data: file bytes.

    Returns:
        ``"hdf5"`` (HDF5 signature), ``"zip"`` (a readable zip archive), ``"onnx"`` (an ONNX
        ModelProto that parses) or ``"uff"`` (a UFF MetaGraph: protobuf fields version,
        descriptor_core_version and graphs, well formed to the last byte); ``None`` otherwise.
    """
    data = bytes(data)
    if data.startswith(HDF5_MAGIC):
        return "hdf5"
    if _is_zip(data):
        return "zip"
    if _is_onnx(data):
        return "onnx"
    if _is_uff(data):
        return "uff"
    return None
