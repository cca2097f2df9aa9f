"""Real-world image folders through the command line and the folder adapter: a run, or one line
naming the file (exit 2), never a traceback; and a fuzz test of odd, damaged and large files."""

import io
import json
import shutil
import warnings

import numpy as np
import pytest
from cli_invoke import invoke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from image_files import cmyk, sixteen_bit_grey, transparent_rgba, truncate, write_bilevel_png
from PIL import Image

from tcs_fewshot.data.benchmarks.folder import ImageFolderBenchmark
from tcs_fewshot.data.images import ImageFileError, ImageOptions


def no_traceback(outcome):
    everything = outcome.stdout + outcome.stderr
    assert "Traceback" not in everything, everything
    return outcome


@pytest.fixture
def real_world(tmp_path):
    """4 classes of 5 ordinary PNGs, plus in kind0 a 200-megapixel PNG, a CMYK JPEG, a 16-bit PNG,
    a transparent PNG, a 20-megapixel 1-bit PNG and a truncated JPEG."""
    root = tmp_path / "world"
    rng = np.random.default_rng(0)
    for c in range(4):
        (root / f"kind{c}").mkdir(parents=True)
        for i in range(5):
            pixels = np.full((24, 24, 3), 60 * c, dtype=np.uint8) + rng.integers(0, 20, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"kind{c}" / f"{i}.png")
    odd = root / "kind0"
    write_bilevel_png(odd / "huge.png", 20000, 10000)
    write_bilevel_png(odd / "large.png", 5000, 4000)
    cmyk().save(odd / "print.jpg")
    sixteen_bit_grey(30000).save(odd / "scan.png")
    transparent_rgba().save(odd / "clip.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(odd / "partial.jpg")
    truncate(odd / "partial.jpg")
    (tmp_path / "split.json").write_text(json.dumps({"test": [f"kind{c}" for c in range(4)]}))
    return root


def run_args(root, out, *extra):
    return ["run", "--benchmark", "folder", "--root", str(root), "--split-file", str(root.parent / "split.json"),
            "--teacher", "pixels", "--ways", "2", "--shots", "1", "--queries", "2", "--tasks", "3",
            "--methods", "ncm", "--no-progress", "--out", str(out), *extra]


def test_a_real_world_folder_is_checked_refused_in_one_line_then_run(real_world, tmp_path):
    check = no_traceback(invoke(["data", "check", "folder", "--root", str(real_world),
                                 "--split-file", str(tmp_path / "split.json")]))
    assert check.exit_code == 2
    problems = [line for line in check.stderr.splitlines() if line.startswith("problem:")]
    assert len(problems) == 2
    assert "oversized image" in problems[0] + problems[1] and "--max-image-pixels 200000000" in check.stderr
    assert f"corrupt image '{real_world / 'kind0' / 'partial.jpg'}'" in check.stderr
    for note in ("print.jpg' is CMYK", "scan.png' is I;16", "clip.png' is RGBA", "large.png' is 5000x4000"):
        assert note in check.stdout, check.stdout

    refused = no_traceback(invoke(run_args(real_world, tmp_path / "r0")))
    assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert f"'{real_world / 'kind0' / 'huge.png'}'" in refused.stderr and "--max-image-pixels" in refused.stderr

    (real_world / "kind0" / "huge.png").unlink()
    truncated = no_traceback(invoke(run_args(real_world, tmp_path / "r1")))
    assert truncated.exit_code == 2 and len(truncated.stderr.strip().splitlines()) == 1
    assert "partial.jpg' is corrupt" in truncated.stderr and "truncated" in truncated.stderr

    (real_world / "kind0" / "partial.jpg").unlink()
    ran = no_traceback(invoke(run_args(real_world, tmp_path / "white")))
    assert ran.exit_code == 0, ran.stderr
    manifest = json.loads((tmp_path / "white" / "manifest.json").read_text())
    assert manifest["config"]["data"]["images"] == {"decoder": 1, "background": "#ffffff", "working_pixels": 4096 * 4096}

    # The background decides pixels: the same run directory refuses another, a new one takes it.
    again = no_traceback(invoke(run_args(real_world, tmp_path / "white", "--background", "black")))
    assert again.exit_code == 2 and 'config.data.images.background was "#ffffff", now "#000000"' in again.stderr, again.stderr
    black = no_traceback(invoke(run_args(real_world, tmp_path / "black", "--background", "0,0,0")))
    assert black.exit_code == 0, black.stderr
    assert "background = \"0,0,0\"" in (tmp_path / "black" / "config.toml").read_text()
    bad = no_traceback(invoke(run_args(real_world, tmp_path / "bad", "--background", "nope")))
    assert bad.exit_code == 2 and "background 'nope' is not a colour" in bad.stderr


# Files the fuzz test writes: (format, mode) pairs PIL can save, sizes up to 60 px.
KINDS = [("PNG", m) for m in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16")] + \
        [("JPEG", m) for m in ("L", "RGB", "CMYK")] + [("GIF", "P"), ("GIF", "L"), ("BMP", "1"), ("BMP", "RGB")] + \
        [("TIFF", m) for m in ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F")]
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


@st.composite
def image_file(draw):
    fmt, mode = draw(st.sampled_from(KINDS))
    width, height = draw(st.integers(1, 60)), draw(st.integers(1, 60))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    if mode in ("I;16", "I", "F"):
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        image = Image.fromarray(rng.integers(0, 65536, (height, width)).astype(dtype))
    else:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)
    options = {"transparency": 0} if draw(st.booleans()) and mode in ("P", "L") and fmt in ("PNG", "GIF") else {}
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if damage == "truncate":
        data = data[:draw(st.integers(0, max(0, len(data) - 1)))]
    elif damage == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    return SUFFIX[fmt], data, (width, height), damage != "none"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(files=st.lists(image_file(), min_size=1, max_size=6), working=st.integers(50, 4000),
       limit=st.integers(100, 5000), background=st.sampled_from(["white", "black", "#336699"]))
def test_fuzzed_files_load_as_rgb_or_fail_in_one_line_naming_them(tmp_path, files, working, limit, background):
    warnings.simplefilter("error")  # no warning leaks out of decoding, however damaged the file
    root = tmp_path / "fuzz"
    shutil.rmtree(root, ignore_errors=True)
    for c in range(2):
        (root / f"k{c}").mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(root / f"k{c}" / "base.png")
    for k, (suffix, data, _, _) in enumerate(files):
        (root / "k0" / f"f{k}{suffix}").write_bytes(data)
    options = ImageOptions.parse(background, limit)
    options = ImageOptions(options.background, options.max_pixels, working)
    report = ImageFolderBenchmark(root).check(images=options)  # never raises
    data = ImageFolderBenchmark(root).load().with_images(options)
    failed = set()
    for k, (suffix, _, (width, height), damaged) in enumerate(files):
        item = f"k0/f{k}{suffix}"
        try:
            image = data.load_image(item)
        except ImageFileError as error:
            message = str(error)
            assert "\n" not in message and f"'{root / item}'" in message
            failed.add(str(root / item))
            continue
        assert image.mode == "RGB" and image.size[0] * image.size[1] <= working
        if not damaged:  # a flipped header byte may change the declared size
            assert image.size[0] <= width and image.size[1] <= height
            assert image.size == (width, height) or width * height > working
    listed = {path for path in failed if any(f"'{path}'" in problem for problem in report.problems)}
    assert listed == failed, (report.problems, failed)
