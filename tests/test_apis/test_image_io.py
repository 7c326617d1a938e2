"""Image reading/conversion and label-map writing (mmseg_escnet.apis.image_io): no model needed."""
import json
import os
import os.path as osp
import struct
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest

from mmseg_escnet.apis import image_io
from mmseg_escnet.apis.image_io import (label_map_dtype, list_images, read_image, resize_label_map,
                                        shrink_to_max_side, to_bgr_uint8, write_label_map)


@pytest.fixture(scope='module')
def bgr():
    return np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)


def test_grayscale_is_repeated_to_three_channels(bgr):
    gray = bgr[:, :, 1]
    for array in (gray, gray[:, :, None]):
        out = to_bgr_uint8(array)
        assert out.shape == (9, 13, 3) and out.dtype == np.uint8
        for c in range(3):
            np.testing.assert_array_equal(out[:, :, c], gray)


def test_alpha_is_dropped_and_channel_order_kept(bgr):
    alpha = np.full((9, 13, 1), 7, dtype=np.uint8)
    np.testing.assert_array_equal(to_bgr_uint8(np.concatenate([bgr, alpha], axis=2)), bgr)
    np.testing.assert_array_equal(to_bgr_uint8(bgr), bgr)


def test_uint16_scales_the_full_range():
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    out = to_bgr_uint8(values)[:, :, 0].astype(np.int64)
    # x / 257 is never exactly k + 0.5 (257 is odd), so round-half-up and rint agree.
    np.testing.assert_array_equal(out, np.rint(values / 257.0).astype(np.int64))
    assert out[0, 0] == 0 and out[-1, -1] == 255


def test_uint16_of_an_8bit_image_gives_it_back(bgr):
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # full-range data: no warning
        np.testing.assert_array_equal(to_bgr_uint8(bgr.astype(np.uint16) * 257), bgr)


def test_dark_uint16_warns_but_keeps_the_documented_scaling(tmp_path):
    twelve_bit = np.array([[0, 1000, 4095]], dtype=np.uint16)
    with pytest.warns(UserWarning, match=r'input 2: 16-bit image with maximum value 4095 < 4096 '
                      r'\(12-bit .*dark after scaling \(maximum 16 of 255\).*pass an 8-bit '
                      r'array'):
        out = to_bgr_uint8(twelve_bit, name='input 2')
    np.testing.assert_array_equal(out[0, :, 0], [0, 4, 16])  # round(x / 257)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        to_bgr_uint8(np.array([[4096]], dtype=np.uint16))  # 13 bits used: no warning
    cv2.imwrite(str(tmp_path / 'dark.png'), np.full((3, 4), 300, dtype=np.uint16))
    with pytest.warns(UserWarning, match='image file .*dark.png: 16-bit image with maximum '
                      'value 300'):
        assert read_image(tmp_path / 'dark.png').max() == 1


def test_float_in_unit_range(bgr):
    np.testing.assert_array_equal(to_bgr_uint8(bgr / 255.0), bgr)
    np.testing.assert_array_equal(to_bgr_uint8((bgr / 255.0).astype(np.float32)), bgr)


@pytest.mark.parametrize('array, message', [
    (np.zeros((4, 4, 3), dtype=bool), r'unsupported dtype bool \(shape \(4, 4, 3\)\)'),
    (np.zeros((4, 4, 3), dtype=np.int32), 'unsupported dtype int32'),
    (np.zeros((4, 4, 2), dtype=np.uint8), r'got shape \(4, 4, 2\) \(dtype uint8\)'),
    (np.zeros((2, 4, 4, 3), dtype=np.uint8), r'got shape \(2, 4, 4, 3\)'),
    (np.zeros((4, ), dtype=np.uint8), r'got shape \(4,\)'),
    (np.zeros((0, 4, 3), dtype=np.uint8), r'the image is empty, shape \(0, 4, 3\)'),
    (np.full((4, 4), 1.5), r'values in \[1.5, 1.5\]'),
    (np.full((4, 4), -0.1, dtype=np.float32), r'values in \[-0.1, -0.1\]'),
    (np.full((4, 4), np.nan), 'non-finite values'),
])
def test_bad_arrays_are_refused(array, message):
    with pytest.raises(ValueError, match=message):
        to_bgr_uint8(array, name='input 0')


def test_non_array_is_refused():
    with pytest.raises(TypeError, match='input 3: expected a numpy array, got list'):
        to_bgr_uint8([[1, 2]], name='input 3')


def test_read_image_formats(tmp_path, bgr):
    cv2.imwrite(str(tmp_path / 'c.png'), bgr)
    cv2.imwrite(str(tmp_path / 'g.png'), bgr[:, :, 0])
    cv2.imwrite(str(tmp_path / 'c16.png'), bgr.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / 'a.png'), np.concatenate([bgr, bgr[:, :, :1]], axis=2))
    cv2.imwrite(str(tmp_path / 'c.bmp'), bgr)
    np.testing.assert_array_equal(read_image(tmp_path / 'c.png'), bgr)
    np.testing.assert_array_equal(read_image(tmp_path / 'g.png'), np.repeat(bgr[:, :, :1], 3, 2))
    np.testing.assert_array_equal(read_image(tmp_path / 'c16.png'), bgr)
    np.testing.assert_array_equal(read_image(tmp_path / 'a.png'), bgr)
    np.testing.assert_array_equal(read_image(str(tmp_path / 'c.bmp')), bgr)


def test_read_image_non_ascii_path(tmp_path, bgr):
    path = tmp_path / 'café_图像.png'
    ok, data = cv2.imencode('.png', bgr)
    assert ok
    path.write_bytes(data.tobytes())
    np.testing.assert_array_equal(read_image(path), bgr)


def test_read_image_applies_exif_orientation(tmp_path):
    from PIL import Image
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20] = 255  # left half white
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / 'rotated.jpg', exif=exif.tobytes(), quality=100)
    shown = read_image(tmp_path / 'rotated.jpg')
    assert shown.shape == (40, 20, 3)
    assert shown[:18].mean() > 200 and shown[22:].mean() < 50  # white half now on top


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='image file .*missing.png not found'):
        read_image(tmp_path / 'missing.png')
    with pytest.raises(FileNotFoundError, match='is a folder, not an image file'):
        read_image(tmp_path)
    (tmp_path / 'bad.png').write_bytes(b'this is not a png')
    with pytest.raises(ValueError, match='cannot decode image file .*bad.png'):
        read_image(tmp_path / 'bad.png')
    (tmp_path / 'empty.jpg').write_bytes(b'')
    with pytest.raises(ValueError, match='cannot decode image file .*empty.jpg'):
        read_image(tmp_path / 'empty.jpg')


def _bmp_header(width, height):
    """A BMP file header claiming a 24-bit image of this size, without pixel data."""
    row = (width * 3 + 3) // 4 * 4
    info = struct.pack('<IiiHHIIiiII', 40, width, height, 1, 24, 0, row * height, 2835, 2835, 0, 0)
    return b'BM' + struct.pack('<IHHI', 54 + row * height, 0, 0, 54) + info


def test_image_beyond_the_opencv_pixel_limit_is_a_value_error(tmp_path):
    limit = image_io.opencv_pixel_limit()
    if limit >= 1_200_000_000:
        pytest.skip(f'OPENCV_IO_MAX_IMAGE_PIXELS={limit} in the environment allows the image')
    # OpenCV checks the size from the header, before reading pixels: a header is enough
    (tmp_path / 'huge.bmp').write_bytes(_bmp_header(40000, 30000))
    with pytest.raises(ValueError, match=r'cannot decode image file .*huge.bmp: it is larger '
                       r'\(1,200,000,000 pixels\) than OpenCV\'s limit of '
                       '1073741824 pixels; .*environment variable OPENCV_IO_MAX_IMAGE_PIXELS'):
        read_image(tmp_path / 'huge.bmp', max_pixels=None)


def _png_bomb(path, width, height):
    """A 1-bit PNG of ``width x height`` zeros, written row by row (a few hundred KB on disk)."""
    import zlib

    def chunk(kind, data):
        return (struct.pack('>I', len(data)) + kind + data
                + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))

    compressor, parts = zlib.compressobj(9), []
    row = b'\x00' * (1 + (width + 7) // 8)  # filter byte + packed bits
    for _ in range(height):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    ihdr = struct.pack('>IIBBBBB', width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', b''.join(parts))
                + chunk(b'IEND', b''))


_BOMB_SCRIPT = """
import json, resource, sys
from mmseg_escnet.apis.image_io import read_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
messages = []
for path in sys.argv[1:]:
    try:
        read_image(path)
        messages.append('no error')
    except ValueError as err:
        messages.append(str(err))
grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps(dict(messages=messages, grown_kb=grown_kb)))
"""


def test_bombs_are_refused_from_the_header_without_decoding(tmp_path):
    png, hdr = tmp_path / 'bomb.png', tmp_path / 'bomb.hdr'
    _png_bomb(png, 32000, 32000)
    assert osp.getsize(png) < 2_000_000
    pixels = b'\x02\x02\x1f\x40' + b'\x80\x00' * 4000  # an RLE scanline start, then filler
    hdr.write_bytes(b'#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 8000 +X 8000\n' + pixels)
    proc = subprocess.run([sys.executable, '-c', _BOMB_SCRIPT, str(png), str(hdr)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    png_message, hdr_message = result['messages']
    # beyond Pillow's own bomb limit, its message gives the pixel count only
    assert png_message == (f'image file {png} is 1,024,000,000 pixels, more than '
                           'the limit of 40,000,000 pixels; shrink it first, or raise the limit '
                           '(max_pixels=, --max-pixels)')
    assert hdr_message.startswith(f'cannot decode image file {hdr}: it is a Radiance HDR image, '
                                  'whose size is only known after decoding it, so it is refused')
    assert result['grown_kb'] < 200_000  # decoding either would take gigabytes


def test_max_pixels_is_configurable_and_checked(tmp_path, bgr):
    path = tmp_path / 'small.png'
    cv2.imwrite(str(path), bgr)  # 13 x 9 = 117 pixels
    np.testing.assert_array_equal(read_image(path, max_pixels=117), bgr)
    with pytest.raises(ValueError, match=r'small.png is 13 x 9 = 117 pixels, more than the limit '
                       'of 116 pixels'):
        read_image(path, max_pixels=116)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError,
                           match=r'max_pixels must be a positive int or None \(no limit'):
            read_image(path, max_pixels=bad)


def test_every_suffix_we_list_is_sized_from_its_header(tmp_path):
    from mmseg_escnet.apis.image_limits import header_size
    bgr = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)  # JPEG 2000: >= 32
    for suffix in image_io.IMAGE_SUFFIXES:
        path = str(tmp_path / f'x{suffix}')
        image = bgr[:, :, 0] if suffix in ('.pbm', '.pgm') else bgr
        assert cv2.imwrite(path, image), suffix
        assert header_size(path) == ('64 x 48 = 3,072 pixels', 3072), suffix
        assert read_image(path, max_pixels=3072).shape == (48, 64, 3), suffix


def test_headerless_formats_decode_only_without_a_limit(tmp_path, bgr):
    path = str(tmp_path / 'x.hdr')
    assert cv2.imwrite(path, bgr.astype(np.float32) / 255)
    with pytest.raises(ValueError, match='it is a Radiance HDR image'):
        read_image(path)
    assert read_image(path, max_pixels=None).shape == (9, 13, 3)


_LIMIT_SCRIPT = """
import importlib.util, json, os.path, sys, types
package = types.ModuleType('io_package')  # image_io and image_limits without the package: fast
package.__path__ = [os.path.dirname(sys.argv[1])]
sys.modules['io_package'] = package
spec = importlib.util.spec_from_file_location('io_package.image_io', sys.argv[1])
image_io = importlib.util.module_from_spec(spec)
spec.loader.exec_module(image_io)
messages = []
for pil_limit in (None, 10):  # 10: Pillow's own limit refuses the header too
    if pil_limit:
        from PIL import Image
        Image.MAX_IMAGE_PIXELS = pil_limit
    try:
        image_io.read_image(sys.argv[2])
        messages.append('no error')
    except ValueError as err:
        messages.append(str(err))
print(json.dumps(messages))
"""


def test_opencv_pixel_limit_from_the_environment(tmp_path):
    cv2.imwrite(str(tmp_path / 'photo.png'), np.zeros((20, 30, 3), dtype=np.uint8))
    module = osp.join(osp.dirname(image_io.__file__), 'image_io.py')
    env = dict(os.environ, OPENCV_IO_MAX_IMAGE_PIXELS='100')  # read when OpenCV is loaded
    argv = [sys.executable, '-c', _LIMIT_SCRIPT, module, str(tmp_path / 'photo.png')]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with_size, pixels_only = json.loads(proc.stdout)
    assert with_size == (f'cannot decode image file {tmp_path / "photo.png"}: it is larger (30 x '
                         f'20 = 600 pixels) than OpenCV\'s limit of 100 pixels; raise the limit by '
                         f'setting the environment variable OPENCV_IO_MAX_IMAGE_PIXELS (e.g. to '
                         f'{1 << 40}) before OpenCV is imported, or shrink the image first')
    assert '(600 pixels) than OpenCV\'s limit of 100 pixels' in pixels_only


def test_opencv_pixel_limit_value(monkeypatch):
    monkeypatch.delenv('OPENCV_IO_MAX_IMAGE_PIXELS', raising=False)
    assert image_io.opencv_pixel_limit() == 1 << 30
    monkeypatch.setenv('OPENCV_IO_MAX_IMAGE_PIXELS', '5000')
    assert image_io.opencv_pixel_limit() == 5000


def test_list_images_sorted_and_filtered(tmp_path, bgr):
    for name in ('b.png', 'a.JPG', 'c.tif', 'notes.txt', 'z.npy'):
        (tmp_path / name).write_bytes(b'x')
    (tmp_path / 'sub.png').mkdir()  # a folder with an image suffix is not an image
    assert [p.split('/')[-1] for p in list_images(tmp_path)] == ['a.JPG', 'b.png', 'c.tif']
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / 'readme.md').write_text('no images')
    with pytest.raises(FileNotFoundError, match='image folder .*empty holds no image file'):
        list_images(empty)
    with pytest.raises(FileNotFoundError, match='image folder .*nope not found'):
        list_images(tmp_path / 'nope')


def test_shrink_to_max_side():
    big = np.zeros((3000, 2000, 3), dtype=np.uint8)
    assert shrink_to_max_side(big, 64).shape == (64, 43, 3)
    assert shrink_to_max_side(big[:2000, :1], 100).shape == (100, 1, 3)  # sides stay >= 1
    small = np.zeros((7, 5, 3), dtype=np.uint8)
    assert shrink_to_max_side(small, 64) is small
    assert shrink_to_max_side(big, None) is big


@pytest.mark.parametrize('src, dst', [((7, 5), (30, 11)), ((30, 11), (7, 5)), ((1, 1), (4, 9))])
def test_resize_label_map_is_opencv_nearest(src, dst):
    labels = np.random.default_rng(1).integers(0, 200, src).astype(np.uint8)
    expected = cv2.resize(labels, dst[::-1], interpolation=cv2.INTER_NEAREST)
    resized = resize_label_map(labels.astype(np.int64), dst)
    assert resized.dtype == np.int64
    np.testing.assert_array_equal(resized, expected)
    if dst[0] >= src[0] and dst[1] >= src[1]:  # enlarging keeps every class
        assert set(np.unique(resized)) == set(np.unique(labels))


def test_write_label_map_round_trip(tmp_path):
    labels = np.random.default_rng(2).integers(0, 5, (6, 7))
    path = write_label_map(tmp_path / 'sub' / 'l.png', labels, num_classes=5)
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)
    wide = labels * 100  # ids up to 400 of 401 classes
    back = cv2.imread(write_label_map(tmp_path / 'w.png', wide, 401), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, wide)
    assert label_map_dtype(256) is np.uint8 and label_map_dtype(257) is np.uint16


def test_write_label_map_errors(tmp_path):
    labels = np.zeros((2, 2), dtype=np.int64)
    with pytest.raises(ValueError, match='l.jpg does not end in .png'):
        write_label_map(tmp_path / 'l.jpg', labels, 3)
    with pytest.raises(ValueError, match=r'ids in \[0, 3\], outside \[0, 3\)'):
        write_label_map(tmp_path / 'l.png', labels + np.array([[0, 3], [0, 0]]), 3)
    with pytest.raises(ValueError, match='2-D integer array'):
        write_label_map(tmp_path / 'l.png', labels.astype(float), 3)
    with pytest.raises(ValueError, match='1 to 65536 classes, got 70000'):
        write_label_map(tmp_path / 'l.png', labels, 70000)
