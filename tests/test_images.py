"""Image decoding (tcs_fewshot.data.images): every mode to correct RGB, transparency on the
background, bounded decode of large files, one-line errors, and the cache keyed on the background."""

import warnings

import numpy as np
import pytest
from image_files import (
    cmyk,
    palette_with_transparency,
    sixteen_bit_grey,
    transparent_rgba,
    truncate,
    write_bilevel_png,
)
from PIL import Image
from test_cache import make_teacher

from tcs_fewshot.data.benchmarks.base import BenchmarkData, load_rgb
from tcs_fewshot.data.benchmarks.folder import ImageFolderBenchmark
from tcs_fewshot.data.images import ImageFileError, ImageLoader, ImageOptions, open_rgb, parse_background
from tcs_fewshot.data.index import LabelIndex
from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.cache.feature_cache import FeatureCache, content_fingerprint

BLACK = ImageOptions.parse("black")


def pixel(path, options=None, at=(1, 1)):
    image = open_rgb(path, options)
    assert image.mode == "RGB"
    return image.getpixel(at)


@pytest.mark.parametrize("value, expected", [(65535, 255), (32768, 128), (257, 1), (0, 0)])
def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path, value, expected):
    path = tmp_path / "deep.png"
    sixteen_bit_grey(value).save(path)
    assert Image.open(path).mode == "I;16"
    assert pixel(path) == (expected,) * 3  # convert("RGB") gave 255 for every value over 255


def test_sixteen_bit_transparency_and_32_bit_and_float(tmp_path):
    sixteen_bit_grey(1000).save(tmp_path / "t.png", transparency=1000)
    assert pixel(tmp_path / "t.png") == (255, 255, 255) and pixel(tmp_path / "t.png", BLACK) == (0, 0, 0)
    Image.fromarray(np.full((4, 4), 65535, np.int32)).save(tmp_path / "i.tif")
    Image.fromarray(np.full((4, 4), 200, np.int32)).save(tmp_path / "small.tif")
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "f.tif")
    assert [pixel(tmp_path / name)[0] for name in ("i.tif", "small.tif", "f.tif")] == [255, 200, 128]


def test_cmyk_jpeg_pure_cyan_is_rgb_cyan(tmp_path):
    cmyk().save(tmp_path / "c.jpg", quality=95)
    cmyk((0, 0, 0, 255)).save(tmp_path / "k.jpg", quality=95)
    assert np.abs(np.subtract(pixel(tmp_path / "c.jpg"), (0, 255, 255))).max() <= 3
    assert np.abs(np.subtract(pixel(tmp_path / "k.jpg"), (0, 0, 0))).max() <= 3


def test_transparency_is_composited_on_the_background(tmp_path):
    transparent_rgba().save(tmp_path / "a.png")
    assert pixel(tmp_path / "a.png") == (255, 255, 255)  # convert("RGB") showed the hidden (120, 0, 0)
    assert pixel(tmp_path / "a.png", BLACK) == (0, 0, 0)
    assert pixel(tmp_path / "a.png", ImageOptions.parse("#102030")) == (16, 32, 48)
    assert pixel(tmp_path / "a.png", at=(0, 0)) == (0, 0, 255)  # opaque pixels keep their colour
    Image.new("LA", (4, 4), (10, 128)).save(tmp_path / "la.png")
    assert pixel(tmp_path / "la.png") == (132,) * 3  # 10 * 128/255 + 255 * 127/255


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_palette_transparency_without_warnings(tmp_path, suffix):
    path = tmp_path / f"p{suffix}"
    palette_with_transparency().save(path, transparency=0)
    bytes_path = tmp_path / "bytes.png"  # transparency as a bytes table: PIL warns on convert("RGB")
    image = palette_with_transparency()
    image.info["transparency"] = bytes([0] + [255] * 255)
    image.save(bytes_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pixel(path) == (255, 255, 255) and pixel(path, at=(0, 0)) == (0, 255, 0)
        assert pixel(bytes_path) == (255, 255, 255)
        assert pixel(path, BLACK) == (0, 0, 0)


def test_plain_modes_come_out_as_convert_gives_them(tmp_path):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8))
    images = {"rgb.png": rgb, "rgb.jpg": rgb, "l.png": rgb.convert("L"), "p.png": rgb.convert("P"),
              "one.png": rgb.convert("1"), "ycc.jpg": rgb}
    for name, image in images.items():
        image.save(tmp_path / name)
        with Image.open(tmp_path / name) as original:
            assert np.array_equal(np.asarray(load_rgb(tmp_path / name)), np.asarray(original.convert("RGB"))), name


def test_a_200_megapixel_png_is_refused_in_one_line_without_decoding(tmp_path):
    path = write_bilevel_png(tmp_path / "huge.png", 20000, 10000)
    assert path.stat().st_size < 100_000
    with pytest.raises(ImageFileError) as caught:
        open_rgb(path)
    message = str(caught.value)
    assert "\n" not in message and f"'{path}'" in message and "20000x10000" in message
    assert "--max-image-pixels 200000000" in message and caught.value.kind == "oversized"
    with warnings.catch_warnings():  # PIL's bomb check (an error over 179 megapixels) never runs
        warnings.simplefilter("error")
        with pytest.raises(ImageFileError):
            open_rgb(path, ImageOptions(max_pixels=150_000_000))
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # PIL's own limit restored for everyone else


def test_large_images_are_reduced_png_by_reduce_and_jpeg_by_draft(tmp_path):
    write_bilevel_png(tmp_path / "wide.png", 400, 300)
    Image.new("RGB", (400, 300), (200, 10, 10)).save(tmp_path / "wide.jpg")
    small = ImageOptions(working_pixels=1000)
    png, jpeg = open_rgb(tmp_path / "wide.png", small), open_rgb(tmp_path / "wide.jpg", small)
    assert png.size == (34, 25) and png.getpixel((5, 5)) == (0, 0, 0)  # 400/12, 300/12 rounded up
    assert jpeg.size[0] * jpeg.size[1] <= 1000 and np.abs(np.subtract(jpeg.getpixel((5, 5)), (200, 10, 10))).max() <= 6
    # The JPEG decodes at 1/8 scale (50x38 = 1,900 pixels): a limit below that refuses it, above it loads.
    with pytest.raises(ImageFileError, match="--max-image-pixels 1900"):
        open_rgb(tmp_path / "wide.jpg", ImageOptions(max_pixels=1899, working_pixels=1000))
    assert open_rgb(tmp_path / "wide.jpg", ImageOptions(max_pixels=1900, working_pixels=1000)).size == jpeg.size
    with pytest.raises(ImageFileError, match="--max-image-pixels 120000"):
        open_rgb(tmp_path / "wide.png", ImageOptions(max_pixels=119_999, working_pixels=1000))


@pytest.mark.parametrize("name", ["t.png", "t.jpg"])
def test_truncated_files_are_one_line_errors_naming_the_file(tmp_path, name):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(tmp_path / name)
    truncate(tmp_path / name)
    with pytest.raises(ImageFileError) as caught:
        open_rgb(tmp_path / name)
    assert f"image '{tmp_path / name}' is corrupt (" in str(caught.value) and "truncated" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_and_non_image_files(tmp_path):
    with pytest.raises(ImageFileError, match="is missing"):
        open_rgb(tmp_path / "absent.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageFileError, match="is corrupt .not an image file"):
        open_rgb(tmp_path / "text.png")


def test_background_and_limit_values_are_checked():
    assert parse_background("white") == (255, 255, 255) and parse_background("0, 128,255") == (0, 128, 255)
    assert parse_background("#ff000080") == (255, 0, 0)
    for bad in ("notacolour", "", "1,2", "300,0,0"):
        with pytest.raises(TcsFewshotError, match="is not a colour"):
            parse_background(bad)
    with pytest.raises(TcsFewshotError, match="positive integer"):
        ImageOptions.parse("white", 0)
    assert ImageOptions().record() == {"decoder": 1, "background": "#ffffff", "working_pixels": 4096 * 4096}


def test_folder_check_lists_oversized_truncated_and_odd_mode_images(tmp_path):
    root = tmp_path / "mixed"
    for c in range(2):
        (root / f"k{c}").mkdir(parents=True)
        Image.new("RGB", (8, 8), (50 * c, 0, 0)).save(root / f"k{c}" / "plain.png")
    write_bilevel_png(root / "k0" / "huge.png", 20000, 10000)
    cmyk().save(root / "k0" / "cmyk.jpg")
    sixteen_bit_grey(40000).save(root / "k1" / "deep.png")
    transparent_rgba().save(root / "k1" / "clip.png")
    Image.new("RGB", (64, 64)).save(root / "k1" / "cut.png")
    truncate(root / "k1" / "cut.png", 0.3)
    report = ImageFolderBenchmark(root).check(images=ImageOptions(working_pixels=1000))
    problems = "\n".join(report.problems)
    assert f"oversized image '{root / 'k0' / 'huge.png'}'" in problems and "--max-image-pixels 200000000" in problems
    assert f"corrupt image '{root / 'k1' / 'cut.png'}'" in problems and len(report.problems) == 2
    notes = "\n".join(report.notes)
    assert "cmyk.jpg' is CMYK" in notes and "deep.png' is I;16: 16-bit" in notes
    assert "clip.png' is RGBA: transparency composited on #ffffff" in notes and "plain.png" not in notes
    assert report.facts["odd_mode_images"] == "CMYK 1, I;16 1, RGBA 1"


def _transparent_folder(root):
    for c in range(3):
        (root / f"k{c}").mkdir(parents=True)
        for i in range(3):
            image = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
            image.paste((60 * c + 20 * i, 200, 30, 255), (10, 10, 30, 30))
            image.save(root / f"k{c}" / f"{i}.png")
    return ImageFolderBenchmark(root).load()


def test_a_changed_background_is_another_cache_entry(tmp_path):
    white = _transparent_folder(tmp_path / "clip")
    black = white.with_images(BLACK)
    assert np.asarray(white.load_image("k0/0.png"))[0, 0].tolist() == [255, 255, 255]
    assert np.asarray(black.load_image("k0/0.png"))[0, 0].tolist() == [0, 0, 0]
    assert content_fingerprint(white) != content_fingerprint(black)
    teacher = make_teacher()
    first = FeatureCache(tmp_path / "cache")
    on_white = first.features(teacher, white)
    assert first.forward_passes == 9
    second = FeatureCache(tmp_path / "cache")
    on_black = second.features(teacher, black)
    assert second.forward_passes == 9 and not np.allclose(on_white, on_black)  # never served white's rows
    third = FeatureCache(tmp_path / "cache")
    assert np.array_equal(third.features(teacher, white.with_images(ImageOptions.parse("#fff"))), on_white)
    assert third.forward_passes == 0  # the same colour however it is written


def test_data_without_image_files_keeps_its_fingerprint():
    index = LabelIndex.from_items(["a/0", "b/0"], ["a", "b"], name="arrays")
    data = BenchmarkData(index, "all", lambda item: Image.new("RGB", (4, 4)), root=None)
    assert data.image_record is None and data.with_images(BLACK).load_image is data.load_image
    assert content_fingerprint(data) == index.fingerprint  # embedded builds and arrays: cache keys unchanged
    loader = ImageLoader("/nowhere")
    assert loader.with_options(BLACK).options.background == (0, 0, 0) and loader.options.background == (255,) * 3
