// TIFF decoding with libtiff: the first page, in the layouts Pillow's TIFF plugin maps to L, LA, RGB, RGBA,
// P and CMYK (8-bit samples, 1/2/4-bit grey and palettes, 16-bit grey and RGB, JPEG-compressed YCbCr read as
// RGB), each converted as Pillow's raw modes do. Other layouts (float or signed samples, separate planes,
// uncompressed YCbCr…) are refused by name. The Orientation tag counts, as Pillow's exif_transpose reads it.
#include "common.h"

#include <stdlib.h>
#include <string.h>

#include <tiffio.h>

struct tiff_source {
    const uint8_t *data;
    size_t size;
    size_t offset;
    char text[256];  // libtiff's first error
};

static tmsize_t tiff_read(thandle_t handle, void *target, tmsize_t length) {
    struct tiff_source *source = handle;
    size_t available = source->size - source->offset;
    size_t count = length < 0 ? 0 : ((size_t)length < available ? (size_t)length : available);
    memcpy(target, source->data + source->offset, count);
    source->offset += count;
    return (tmsize_t)count;
}

static tmsize_t tiff_write(thandle_t handle, void *data, tmsize_t length) { (void)handle, (void)data, (void)length; return -1; }

static toff_t tiff_seek(thandle_t handle, toff_t offset, int whence) {
    struct tiff_source *source = handle;
    uint64_t base = whence == SEEK_CUR ? source->offset : whence == SEEK_END ? source->size : 0;
    if (offset > UINT64_MAX - base || base + offset > source->size) return (toff_t)-1;
    source->offset = (size_t)(base + offset);
    return source->offset;
}

static int tiff_close(thandle_t handle) { (void)handle; return 0; }
static toff_t tiff_size(thandle_t handle) { return ((struct tiff_source *)handle)->size; }
static int tiff_map(thandle_t handle, void **base, toff_t *size) { (void)handle, (void)base, (void)size; return 0; }
static void tiff_unmap(thandle_t handle, void *base, toff_t size) { (void)handle, (void)base, (void)size; }

static int tiff_error(TIFF *tif, void *user, const char *module, const char *format, va_list arguments) {
    (void)tif, (void)module;
    struct tiff_source *source = user;
    if (!source->text[0]) vsnprintf(source->text, sizeof source->text, format, arguments);
    return 1;
}

static int tiff_warning(TIFF *tif, void *user, const char *module, const char *format, va_list arguments) {
    (void)tif, (void)user, (void)module, (void)format, (void)arguments;
    return 1;
}

// Reports libtiff's first error, or `fallback` when it gave none.
static int tiff_fail(const struct tiff_source *source, char *message, size_t message_size, const char *fallback) {
    snprintf(message, message_size, "invalid TIFF: %s", source->text[0] ? source->text : fallback);
    return 1;
}

// Reads every row of the first page, strip by strip or tile by tile, into rows of `row_bytes` bytes.
static int read_rows(TIFF *tif, uint32_t width, uint32_t height, unsigned pixel_bits, size_t row_bytes, uint8_t *raw) {
    if (!TIFFIsTiled(tif)) {
        uint32_t rows_per_strip = 0;
        TIFFGetFieldDefaulted(tif, TIFFTAG_ROWSPERSTRIP, &rows_per_strip);
        if (rows_per_strip == 0 || rows_per_strip > height) rows_per_strip = height;
        for (uint32_t row = 0; row < height; row += rows_per_strip) {
            uint32_t rows = height - row < rows_per_strip ? height - row : rows_per_strip;
            tmsize_t wanted = (tmsize_t)(rows * row_bytes);
            if (TIFFReadEncodedStrip(tif, TIFFComputeStrip(tif, row, 0), raw + row * row_bytes, wanted) != wanted) return 0;
        }
        return 1;
    }
    uint32_t tile_width = 0, tile_height = 0;
    TIFFGetField(tif, TIFFTAG_TILEWIDTH, &tile_width);
    TIFFGetField(tif, TIFFTAG_TILELENGTH, &tile_height);
    tmsize_t tile_size = TIFFTileSize(tif), tile_row = TIFFTileRowSize(tif);
    if (tile_width == 0 || tile_height == 0 || tile_size <= 0 || tile_row <= 0 || (uint64_t)tile_row * tile_height > (uint64_t)tile_size) return 0;
    // Tiles may overhang the image (256² tiles on a small picture are common), but not by orders of magnitude.
    uint64_t image_bytes = (uint64_t)row_bytes * height;
    if ((uint64_t)tile_size > (image_bytes > ((uint64_t)1 << 22) ? 4 * image_bytes : (uint64_t)1 << 24)) return 0;
    uint8_t *tile = malloc((size_t)tile_size);
    if (!tile) return 0;
    for (uint32_t y = 0; y < height; y += tile_height) {
        for (uint32_t x = 0; x < width; x += tile_width) {
            if (TIFFReadTile(tif, tile, x, y, 0, 0) < 0) {
                free(tile);
                return 0;
            }
            size_t start = (size_t)((uint64_t)x * pixel_bits / 8);  // tile widths are multiples of 16: byte-aligned
            size_t bytes = row_bytes - start < (size_t)tile_row ? row_bytes - start : (size_t)tile_row;
            for (uint32_t r = 0; r < tile_height && y + r < height; r++) memcpy(raw + (y + r) * row_bytes + start, tile + r * tile_row, bytes);
        }
    }
    free(tile);
    return 1;
}

// The sample at `index` of a row of `bits`-bit samples (1, 2, 4, 8 or native-order 16).
static unsigned sample(const uint8_t *row, size_t index, unsigned bits) {
    if (bits == 16) {
        uint16_t v;
        memcpy(&v, row + 2 * index, 2);
        return v;
    }
    if (bits == 8) return row[index];
    size_t bit = index * bits;
    return (row[bit / 8] >> (8 - bits - bit % 8)) & ((1u << bits) - 1);
}

static int unsupported(char *message, size_t message_size, unsigned photometric, unsigned samples, unsigned bits, const char *why) {
    snprintf(message, message_size, "unsupported TIFF: photometric %u, %u sample(s) of %u bits%s", photometric, samples, bits, why);
    return 1;
}

int vitmsn_decode_tiff(const uint8_t *data, size_t size, int64_t max_pixels, vitmsn_image *out, char *message, size_t message_size) {
    memset(out, 0, sizeof *out);
    struct tiff_source source = {data, size, 0, ""};
    TIFFOpenOptions *options = TIFFOpenOptionsAlloc();
    if (!options) return codec_fail(message, message_size, "out of memory");
    TIFFOpenOptionsSetErrorHandlerExtR(options, tiff_error, &source);
    TIFFOpenOptionsSetWarningHandlerExtR(options, tiff_warning, &source);
    TIFFOpenOptionsSetMaxSingleMemAlloc(options, (tmsize_t)1 << 29);
    TIFF *tif = TIFFClientOpenExt("tiff", "rm", &source, tiff_read, tiff_write, tiff_seek, tiff_close, tiff_size, tiff_map, tiff_unmap, options);
    TIFFOpenOptionsFree(options);
    if (!tif) return tiff_fail(&source, message, message_size, "not a readable TIFF file");

    uint32_t width = 0, height = 0;
    uint16_t bits = 1, samples = 1, photometric = 0, planar = PLANARCONFIG_CONTIG, format = SAMPLEFORMAT_UINT, compression = 1, orientation = 1;
    uint16_t extra_count = 0, *extra = NULL;
    TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &width);
    TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &height);
    TIFFGetFieldDefaulted(tif, TIFFTAG_BITSPERSAMPLE, &bits);
    TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLESPERPIXEL, &samples);
    TIFFGetField(tif, TIFFTAG_PHOTOMETRIC, &photometric);
    TIFFGetFieldDefaulted(tif, TIFFTAG_PLANARCONFIG, &planar);
    TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLEFORMAT, &format);
    TIFFGetFieldDefaulted(tif, TIFFTAG_COMPRESSION, &compression);
    TIFFGetField(tif, TIFFTAG_ORIENTATION, &orientation);
    TIFFGetField(tif, TIFFTAG_EXTRASAMPLES, &extra_count, &extra);
    int status = 1;
    uint8_t *raw = NULL, *pixels = NULL;
    if (codec_too_large(width, height, max_pixels, message, message_size)) goto done;
    if (format != SAMPLEFORMAT_UINT) {
        snprintf(message, message_size, "unsupported TIFF: sample format %u (only unsigned integers)", format);
        goto done;
    }
    if (planar != PLANARCONFIG_CONTIG && samples > 1) {
        snprintf(message, message_size, "unsupported TIFF: separate colour planes");
        goto done;
    }
    // What the samples mean: the output channels and how each is made.
    int channels = 0, cmyk = 0, invert = photometric == PHOTOMETRIC_MINISWHITE, alpha = 0, premultiplied = 0;
    if (photometric == PHOTOMETRIC_YCBCR && compression == COMPRESSION_JPEG && bits == 8 && samples == 3) {
        TIFFSetField(tif, TIFFTAG_JPEGCOLORMODE, JPEGCOLORMODE_RGB);  // libjpeg converts, as in Pillow
        channels = 3;
    } else if ((photometric == PHOTOMETRIC_MINISWHITE || photometric == PHOTOMETRIC_MINISBLACK) && samples == 1 &&
               (bits == 1 || bits == 2 || bits == 4 || bits == 8 || bits == 16)) {
        channels = 1;
    } else if (photometric == PHOTOMETRIC_MINISBLACK && samples == 2 && bits == 8 && extra_count == 1 && extra[0] != EXTRASAMPLE_ASSOCALPHA) {
        channels = extra[0] == EXTRASAMPLE_UNASSALPHA ? 2 : 1, alpha = channels == 2;
    } else if (photometric == PHOTOMETRIC_PALETTE && samples == 1 && bits <= 8 && (bits & (bits - 1)) == 0) {
        channels = 3;
    } else if ((photometric == PHOTOMETRIC_RGB || photometric == PHOTOMETRIC_SEPARATED) && (bits == 8 || bits == 16)) {
        unsigned colour = photometric == PHOTOMETRIC_RGB ? 3 : 4;
        int plain = samples == colour + extra_count && samples <= colour + 3 && (photometric == PHOTOMETRIC_RGB || bits == 8);
        for (unsigned i = 1; plain && i < extra_count; i++) plain = extra[i] == EXTRASAMPLE_UNSPECIFIED;
        if (plain || (samples == 4 && extra_count == 0 && photometric == PHOTOMETRIC_RGB)) {
            unsigned kind = extra_count ? extra[0] : EXTRASAMPLE_UNASSALPHA;  // RGB plus an untagged fourth: RGBA
            alpha = samples > colour && kind != EXTRASAMPLE_UNSPECIFIED && photometric == PHOTOMETRIC_RGB;
            premultiplied = alpha && kind == EXTRASAMPLE_ASSOCALPHA;
            if (!(premultiplied && bits == 16)) channels = colour + alpha, cmyk = colour == 4;
        }
    }
    if (!channels) {
        unsupported(message, message_size, photometric, samples, bits, compression == COMPRESSION_JPEG ? " (JPEG-compressed)" : "");
        goto done;
    }
    tmsize_t scanline = TIFFScanlineSize(tif);
    unsigned per_pixel = photometric == PHOTOMETRIC_YCBCR ? 3 : samples;
    if (scanline <= 0 || (uint64_t)scanline != ((uint64_t)width * per_pixel * bits + 7) / 8) {
        tiff_fail(&source, message, message_size, "unexpected row layout");
        goto done;
    }
    size_t count = (size_t)width * height, row_bytes = (size_t)scanline;
    raw = malloc(row_bytes * height);
    pixels = malloc(count * channels);
    if (!raw || !pixels) {
        codec_fail(message, message_size, "out of memory");
        goto done;
    }
    if (!read_rows(tif, width, height, per_pixel * bits, row_bytes, raw)) {
        tiff_fail(&source, message, message_size, "image data is truncated or corrupt");
        goto done;
    }
    uint16_t *map[3] = {NULL, NULL, NULL};
    if (photometric == PHOTOMETRIC_PALETTE && !TIFFGetField(tif, TIFFTAG_COLORMAP, &map[0], &map[1], &map[2])) {
        codec_fail(message, message_size, "TIFF palette image without a colour map");
        goto done;
    }
    unsigned shift = bits == 16 ? 8 : 0;  // 16-bit colour keeps its high byte
    for (uint32_t y = 0; y < height; y++) {
        const uint8_t *row = raw + (size_t)y * row_bytes;
        for (uint32_t x = 0; x < width; x++) {
            uint8_t *p = pixels + ((size_t)y * width + x) * channels;
            size_t first = (size_t)x * per_pixel;
            if (photometric == PHOTOMETRIC_PALETTE) {  // Pillow keeps the colour map's high bytes
                unsigned index = sample(row, first, bits);
                for (int c = 0; c < 3; c++) p[c] = (uint8_t)(map[c][index] >> 8);
            } else if (channels <= 2 && photometric != PHOTOMETRIC_YCBCR) {
                unsigned v = sample(row, first, bits);
                // 1, 2 and 4-bit grey scale to 8 bits; 16-bit grey is Pillow's I;16, clipped (and never inverted).
                unsigned grey = bits == 16 ? (v > 255 ? 255 : v) : bits == 8 ? v : v * (255 / ((1u << bits) - 1));
                p[0] = (uint8_t)(invert && bits != 16 ? 255 - grey : grey);
                if (alpha) p[1] = row[first + 1];
            } else {
                for (int c = 0; c < channels; c++) p[c] = (uint8_t)(sample(row, first + c, bits) >> shift);
                if (premultiplied && p[3] != 255) {  // Pillow's RGBa unpacking: c · 255 / a, clipped; 0 where a = 0
                    for (int c = 0; c < 3; c++) {
                        unsigned v = p[3] ? p[c] * 255u / p[3] : 0;
                        p[c] = (uint8_t)(v > 255 ? 255 : v);
                    }
                }
            }
        }
    }
    out->width = (int)width;
    out->height = (int)height;
    out->channels = channels;
    out->is_cmyk = cmyk;
    out->exif_orientation = orientation >= 1 && orientation <= 8 ? orientation : 0;
    out->pixels = pixels;
    pixels = NULL;
    status = 0;
done:
    free(raw);
    free(pixels);
    TIFFClose(tif);
    return status;
}
