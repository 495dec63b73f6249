"""Measured method choices per device ("wisdom", as FFTW calls it), consulted by ``choose_method``.

``measure`` times every method on a grid of shapes on one device and ``save`` writes the
winners to a JSON cache; ``diffconv tune`` does both. ``lookup`` answers from the cache for
the nearest measured shape (in log2 of batch, length and taps) when one is close enough, and
None otherwise, so the built-in cost model decides.

The cache lives in ``$DIFFCONV_CACHE_DIR/methods.json`` (default
``$XDG_CACHE_HOME/diffconv`` or ``~/.cache/diffconv``); ``DIFFCONV_NO_TUNING=1`` ignores it.
Records measured on methods this version no longer runs (another ``CACHE_GENERATION``) are
ignored too.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import stat
import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from diffconv_core._validation import check_device

METHOD_NAMES = ("direct", "fft", "overlap")
#: Which implementation of the methods a cache's timings describe. Bumped when one of them
#: changes speed enough to change picks: a record of another generation measured code this
#: library no longer runs, so lookups skip it and the cost model decides until ``diffconv
#: tune`` runs again (2: the CPU direct path became one oneDNN convolution over all rows,
#: 1.3-2x faster, 2026-11-28; records written before had no generation. 3: small CPU calls
#: became one native convolution, and small work of the one convolution torch's native
#: one: 1.5-1.8x faster for the tune grid's rows of 1,024 samples (1 x 1,024 with 3 and
#: 31 taps: 36 and 39 us before, 24 and 26 after; 4 x 1,024 with 31: 65 and 37), 2026-11-29.
#: 4: small CPU calls past those of 3 became one native convolution in frames straight from
#: convolve, recorded by autograd: 1.3-1.4x faster forward and 1.6-1.8x forward+backward,
#: interleaved (1 x 4,096 with 31 taps: 78 and 299 us before, 56 and 174 after); larger
#: ones without a graph the same oneDNN convolution as before without the layers around it,
#: 1.1-1.6x faster (512 x 1,024 with 31 taps 238 against 201 us; 16 x 2,000 104 against
#: 65); small float64 calls the same native convolution, 1.5-3x faster than their GEMMs
#: (1 x 4,096 with 31 taps 34 against 81 us), 2026-11-29. 5: the FFT method (and
#: overlap-save's few long blocks) on 1-16 CPU rows past 8,192 points became complex
#: transforms of half the length, 1.1-2.3x faster forward, and the recorded FFT of one row
#: 2x faster forward+backward (1 x 48,000 with 4,095 taps: 1.57 against 0.80 ms), 2026-11-29.
#: 6: CPU FFT lengths a power of two where one is at most 8% longer than the smooth length
#: (up to 1.2x faster), and batches of at most 1.5 M points through the FFT at once, no
#: longer in chunks (1.1-1.5x faster), 2026-11-29).
CACHE_GENERATION = 6
# How far (in log2 units, per axis) a measured shape may be from the asked one.
MAX_LOG2_DISTANCE = 1.0

# The cache file's entries as last read, and the answers lookup has given from them (a scan
# of every entry costs more than a small convolution; cleared whenever the entries change).
# The cache file last read: its entries with the answers worked out from them, one pair
# replaced whole on a reload, so that a lookup reads both from the same file.
_loaded: dict[str, object] = {"path": None, "mtime": None, "cache": ({}, {})}


def cache_path() -> Path:
    """Where the measured choices are stored.

    ``$DIFFCONV_CACHE_DIR/methods.json`` when that variable is set, else
    ``$XDG_CACHE_HOME/diffconv/methods.json``, else ``~/.cache/diffconv/methods.json``. The
    environment is read on every call.

    Example:
        >>> import os, tempfile
        >>> from pathlib import Path
        >>> from unittest import mock
        >>> from diffconv_core.tuning import cache_path
        >>> folder = tempfile.mkdtemp()
        >>> with mock.patch.dict(os.environ, {"DIFFCONV_CACHE_DIR": folder}):
        ...     cache_path() == Path(folder) / "methods.json"
        True
    """
    return _cache_path(_environment("DIFFCONV_CACHE_DIR"), _environment("XDG_CACHE_HOME"))


def _environment(name: str) -> str | None:
    """``os.environ.get(name)``, from the dict behind ``os.environ`` where CPython keeps one
    (POSIX: bytes keys): an unset name costs no KeyError there, 0.05 against 0.55 us, and
    ``convolve`` asks three names on every call.

    Example:
        >>> import os
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {"DIFFCONV_EXAMPLE": "1"}):
        ...     _environment("DIFFCONV_EXAMPLE"), _environment("DIFFCONV_EXAMPLE_UNSET")
        ('1', None)
    """
    stored = getattr(os.environ, "_data", None)
    if os.name != "posix" or not isinstance(stored, dict):
        return os.environ.get(name)
    value = stored.get(os.fsencode(name))
    return None if value is None else os.fsdecode(value)


@functools.lru_cache(maxsize=16)
def _cache_path(base: str | None, xdg: str | None) -> Path:
    if base:
        return Path(base) / "methods.json"
    return Path(xdg or str(Path.home() / ".cache")) / "diffconv" / "methods.json"


def _check_dtype(dtype: object) -> None:
    # Timed tensors are drawn with randn: an integer dtype failed there, in torch's words.
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype; got {dtype!r}")


def device_key(device: str | torch.device, dtype: torch.dtype) -> str:
    """The cache key of a device and dtype, e.g. ``"cuda:NVIDIA H200:float32"``.

    A CUDA device is named by its model; any other device by its type and torch's current
    number of intra-op threads (``"cpu:cpux8:float64"``), since the fastest method on a CPU
    depends on how many cores it runs on.

    Example:
        >>> import torch
        >>> from diffconv_core.tuning import device_key
        >>> device_key("cpu", torch.float64) == f"cpu:cpux{torch.get_num_threads()}:float64"
        True
    """
    device = check_device(device)
    _check_dtype(dtype)
    if device.type == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{device.type}x{torch.get_num_threads()}"
    return f"{device.type}:{name}:{str(dtype).removeprefix('torch.')}"


# The cache file is looked at no more than once per this many seconds: choose_method runs
# on every convolve call and a stat() each time would cost more than small convolutions.
RECHECK_SECONDS = 2.0


def _cache() -> tuple[dict, dict]:
    """The cache's entries and the answers already worked out from them (one pair: a
    lookup that stored an answer from the entries it had read into the answers of a file
    another thread had just reloaded kept that stale answer until the file changed again)."""
    now = time.monotonic()
    path = cache_path()
    # (_cache_path gives the same object for the same variables: `is` before a comparison)
    same_path = _loaded["path"] is path or _loaded["path"] == path
    if same_path and now - _loaded.get("checked", -1e9) < RECHECK_SECONDS:
        return _loaded["cache"]  # type: ignore[return-value]
    _loaded["checked"] = now
    try:
        mtime = path.stat().st_mtime
    except OSError:
        cache: tuple[dict, dict] = ({}, {})
        _loaded.update(path=path, mtime=None, cache=cache)
        return cache
    if _loaded["path"] != path or _loaded["mtime"] != mtime:
        cache = (_usable_entries(_read_json(path)), {})
        _loaded.update(path=path, mtime=mtime, cache=cache)
        return cache
    return _loaded["cache"]  # type: ignore[return-value]


def _read_json(path: Path) -> object:
    """The parsed cache file, or None when it cannot be read or parsed (an unreadable cache
    is no cache: the cost model still answers)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return None  # a FIFO would block every convolve that looks the method up
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        return None


def _usable_entries(data: object) -> dict[str, list[dict]]:
    """Only the well-formed records of each device key. The file is edited by hand, written
    by older versions or truncated, and ``lookup`` runs inside every ``convolve`` call: a
    malformed record must be skipped there, not crash the convolution."""
    if not isinstance(data, dict):
        return {}
    usable = {}
    for key, entries in data.items():
        if isinstance(entries, list):
            usable[key] = [entry for entry in entries if _usable_entry(entry)]
    return usable


def _usable_entry(entry: object) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("mode", "same"), str):
        return False
    if entry.get("generation") != CACHE_GENERATION:
        return False  # timings of another implementation
    for axis in ("batch", "T", "K"):
        value = entry.get(axis)
        real = isinstance(value, (int, float)) and not isinstance(value, bool)
        # An int is finite however long (isfinite would overflow converting one to float).
        if not (real and value >= 1 and (isinstance(value, int) or math.isfinite(value))):
            return False
    return True


def lookup(
    device_type: str,
    batch: int,
    T: int,
    K: int,
    mode: str,
    dtype: torch.dtype,
    device: str | torch.device | None = None,
    requires_grad: bool = False,
) -> str | None:
    """The measured best method for the nearest cached shape on this device, or None.

    With ``requires_grad`` the method fastest forward plus backward, else forward alone.
    Shapes are compared by the work they ask for: batch, taps and the number of outputs, so
    a padded "same" convolution (which the core runs as "valid" over the extended signal)
    and "full" find the "same" shapes ``diffconv tune`` measures. On a CPU, a cache measured
    with another thread count serves when none was measured with this one (the CLI's
    streaming gives one core to the writer).

    Example:
        >>> import os, tempfile
        >>> import torch
        >>> from unittest import mock
        >>> from diffconv_core.tuning import lookup, save
        >>> record = {"batch": 1, "T": 1024, "K": 15, "mode": "same",
        ...           "method": "fft", "method_forward": "direct"}
        >>> env = {"DIFFCONV_CACHE_DIR": tempfile.mkdtemp(), "DIFFCONV_NO_TUNING": "0"}
        >>> with mock.patch.dict(os.environ, env):  # a scratch cache, not the user's
        ...     _ = save([record], "cpu", torch.float32)
        ...     near = lookup("cpu", 1, 1000, 16, "same", torch.float32)
        ...     near_grad = lookup("cpu", 1, 1000, 16, "same", torch.float32, requires_grad=True)
        ...     far = lookup("cpu", 64, 1_000_000, 255, "same", torch.float32)
        >>> near, near_grad, far  # far from every measured shape: the cost model decides
        ('direct', 'fft', None)
    """
    if _environment("DIFFCONV_NO_TUNING") == "1":
        return None
    cache, answers = _cache()
    if not cache:
        return None
    key = device_key(device or device_type, dtype)
    asked = (key, batch, T, K, mode, requires_grad)
    if asked not in answers:
        if len(answers) >= 4096:  # a process seeing ever new shapes: start over
            answers.clear()
        answers[asked] = _nearest(_entries_for(cache, key), batch, T, K, mode, requires_grad)
    return answers[asked]


def _nearest(
    entries: list[dict] | None, batch: int, T: int, K: int, mode: str, requires_grad: bool
) -> str | None:
    if not entries:
        return None
    point = (math.log2(max(batch, 1)), math.log2(_outputs(T, K, mode)), math.log2(K))
    best, best_distance = None, math.inf
    for entry in entries:
        method = entry.get("method") if requires_grad else entry.get("method_forward")
        if method not in METHOD_NAMES:
            continue
        outputs = _outputs(entry["T"], entry["K"], entry.get("mode", "same"))
        other = (math.log2(entry["batch"]), math.log2(outputs), math.log2(entry["K"]))
        distance = max(abs(a - b) for a, b in zip(point, other, strict=True))
        if distance < best_distance:
            best, best_distance = method, distance
    return best if best_distance <= MAX_LOG2_DISTANCE else None


def _outputs(T: int, K: int, mode: str) -> int:
    """How many samples a convolution of these lengths gives in ``mode``."""
    if mode == "full":
        return T + K - 1
    if mode == "valid":
        return max(T, K) - min(T, K) + 1
    return T


def _entries_for(cache: dict, key: str) -> list[dict] | None:
    # "cpu:cpux2:float32": a CPU key names its thread count; another count's entries beat
    # the cost model, the nearest count first.
    if key in cache or not key.startswith("cpu:cpux"):
        return cache.get(key)
    _, name, dtype_name = key.split(":")
    threads = int(name.removeprefix("cpux"))
    others = []
    for other in cache:
        parts = other.split(":")
        if len(parts) == 3 and parts[0] == "cpu" and parts[2] == dtype_name:
            count = parts[1].removeprefix("cpux")
            if count.isascii() and count.isdigit():  # "²" is a digit to isdigit, not to int
                others.append((abs(int(count) - threads), other))
    return cache[min(others)[1]] if others else None


def default_shapes(device_type: str, quick: bool = False) -> list[tuple[int, int, int]]:
    """The (batch, T, K) grid that ``diffconv tune`` measures.

    Every combination of a few batch sizes, signal lengths (1024 to ``2**22`` samples for
    ``"cuda"``, to ``2**21`` for other device types) and tap counts (3 to 16383), less the
    kernels longer than the signal and the batches of more than ``2**23`` samples on a CPU
    (``2**26`` elsewhere); ``quick`` keeps every fourth shape.

    Example:
        >>> from diffconv_core.tuning import default_shapes
        >>> shapes = default_shapes("cpu")
        >>> shapes[:2], len(shapes), len(default_shapes("cpu", quick=True))
        ([(1, 1024, 3), (1, 1024, 15)], 84, 21)
    """
    if device_type == "cuda":
        lengths = (1024, 16_384, 262_144, 4_194_304)
        batches = (1, 16, 256)
    else:
        lengths = (1024, 16_384, 262_144, 2_097_152)
        batches = (1, 4, 64)
    taps = (3, 15, 31, 63, 127, 255, 1023, 4095, 16383)
    shapes = [
        (b, t, k)
        for b in batches
        for t in lengths
        for k in taps
        if k <= t and b * t <= (1 << 23 if device_type == "cpu" else 1 << 26)
    ]
    return shapes[::4] if quick else shapes


def _time(fn, device: torch.device, budget_s: float) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 20):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    shapes: Iterable[tuple[int, int, int]] | None = None,
    *,
    mode: str = "same",
    budget_s: float = 0.05,
    backward: bool = True,
    progress=None,
) -> list[dict]:
    """Time every method on each (batch, T, K) shape; return one record per shape.

    With ``backward`` the time of forward plus backward (gradients to both inputs) decides,
    since training is where the time goes; the forward time is recorded too.

    Each record holds the shape (``batch``, ``T``, ``K``, ``mode``), the median
    ``seconds`` of every method (``{"forward": ..., "total": ...}``), and the winners
    ``method`` (by total) and ``method_forward`` (by forward time alone). Each timing is the median
    of at least 3 runs after a warm-up, more (up to 20) while within about ``budget_s``
    seconds; ``progress(record)`` is called after each shape. Without ``shapes`` the grid
    is :func:`default_shapes`, minutes of work.

    Example:
        >>> import torch
        >>> from diffconv_core.tuning import METHOD_NAMES, measure
        >>> records = measure("cpu", torch.float32, [(1, 64, 3)], budget_s=0.0)
        >>> len(records), sorted(records[0]["seconds"])
        (1, ['direct', 'fft', 'overlap'])
        >>> records[0]["method"] in METHOD_NAMES  # which one wins varies from run to run
        True
    """
    from diffconv_core._direct import MAX_TOEPLITZ_TAPS
    from diffconv_core._validation import MODES, check_choice
    from diffconv_core.convolution import convolve
    from diffconv_core.methods import output_length

    check_choice("mode", mode, MODES)
    if not (isinstance(budget_s, (int, float)) and 0 <= budget_s < math.inf):
        raise ValueError(f"budget_s must be a finite number of seconds >= 0; got {budget_s!r}")
    if shapes is not None:
        shapes = list(shapes)
        for shape in shapes:
            # (A batch of 0 timed nothing, and its record was dropped when the cache was read.)
            if len(shape) != 3 or any(
                isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape
            ):
                raise ValueError(
                    f"shapes must be (batch, T, K) of whole numbers >= 1; got {shape!r}"
                )
    device = check_device(device)
    _check_dtype(dtype)
    records = []
    # Each method once before any timing, recorded by autograd too: a process's first calls
    # pay one-off set-up (oneDNN's, the transforms'), which had the first shape of `diffconv
    # tune --quick` time direct at 65 us where it takes 20 (1 x 1,024 with 3 taps).
    for method in METHOD_NAMES:
        warm_x = torch.randn(2, 1024, device=device, dtype=dtype, requires_grad=backward)
        warm_w = torch.randn(31, device=device, dtype=dtype, requires_grad=backward)
        warm = convolve(warm_x, warm_w, mode, method=method)
        if backward:
            warm.sum().backward()
    for batch, T, K in shapes if shapes is not None else default_shapes(device.type):
        x = torch.randn(batch, T, device=device, dtype=dtype)
        w = torch.randn(K, device=device, dtype=dtype)
        # Shaped as the output: "full" and "valid" are not T long (the backward refused it).
        grad = torch.randn(batch, output_length(T, K, mode), device=device, dtype=dtype)
        record: dict = {"batch": batch, "T": T, "K": K, "mode": mode, "seconds": {}}
        for method in METHOD_NAMES:
            if method == "direct" and (
                batch * T * K > 2e10 or (device.type == "cpu" and K > MAX_TOEPLITZ_TAPS)
            ):
                # Minutes, and never the winner: past the Toeplitz paths' taps the CPU runs
                # conv1d (12 s a pass at 262,144 x 16,383, which made `tune --quick` take
                # several minutes instead of about one).
                continue
            with torch.no_grad():
                forward = _time(
                    lambda m=method, x=x, w=w: convolve(x, w, mode, method=m), device, budget_s
                )
            total = forward
            if backward:
                xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)

                def step(m=method, xg=xg, wg=wg, grad=grad):
                    xg.grad = wg.grad = None
                    convolve(xg, wg, mode, method=m).backward(grad)

                total = _time(step, device, budget_s)
            record["seconds"][method] = {"forward": forward, "total": total}
        seconds = record["seconds"]
        record["method"] = min(seconds, key=lambda m: seconds[m]["total"])
        record["method_forward"] = min(seconds, key=lambda m: seconds[m]["forward"])
        records.append(record)
        if progress is not None:
            progress(record)
    return records


def save(records: list[dict], device: str | torch.device, dtype: torch.dtype, path=None) -> Path:
    """Merge ``records`` into the cache under this device's key, atomically; return the path
    (a symlink's target, which is written through it, as the CLI writes its outputs).

    ``path`` defaults to :func:`cache_path`. The records of other devices and dtypes
    already in the file are kept; this key's are replaced.

    Example:
        >>> import json, tempfile
        >>> import torch
        >>> from pathlib import Path
        >>> from diffconv_core.tuning import device_key, measure, save
        >>> records = measure("cpu", torch.float32, [(1, 64, 3)], budget_s=0.0, backward=False)
        >>> path = save(records, "cpu", torch.float32, Path(tempfile.mkdtemp()) / "methods.json")
        >>> list(json.loads(path.read_text())) == [device_key("cpu", torch.float32)]
        True
    """
    path = Path(path) if path is not None else cache_path()
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if path.exists() and not path.is_file():
        # The rename below would replace a device or FIFO (as root, /dev/null itself).
        raise ValueError(f"{path} is not a regular file; the method cache is never written there")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked_folder(path.parent):
        data = _read_json(path)
        if not isinstance(data, dict):
            data = {}
        data[device_key(device, dtype)] = [
            dict(record, generation=CACHE_GENERATION) for record in records
        ]
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".methods-", suffix=".json")
        try:
            with os.fdopen(handle, "w") as stream:
                json.dump(data, stream, indent=1)
            os.chmod(temp, _file_mode(path))
            os.replace(temp, path)
            _loaded["checked"] = -math.inf  # the next lookup in this process reads the new file
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
    return path


def _file_mode(path: Path) -> int:
    """The permissions the cache should have: those of the file it replaces, else the
    user's usual ones. mkstemp makes 0600, which hid a cache in a shared DIFFCONV_CACHE_DIR
    from every other user (an unreadable cache is silently no cache)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)  # the umask can only be read by setting it
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def _locked_folder(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` while the cache is read, merged and replaced.

    Without it two ``save`` calls at once (``diffconv tune`` for float32 and float64, or on
    two GPUs sharing a home) each merge into the file as it was before the other, and the
    last rename drops the other's device. The folder itself is locked, so no lock file is
    left behind; where locks are unavailable (no ``fcntl``, some network file systems) the
    save goes ahead unlocked, as before.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # closing releases the lock
