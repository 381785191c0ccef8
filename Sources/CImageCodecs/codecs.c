// JPEG and PNG decoding with libjpeg-turbo and libpng. Both report errors by longjmp, which Swift cannot
// catch, so every call into them happens here behind a setjmp, and only a status and a message go back.
#include "CImageCodecs.h"

#include <setjmp.h>
#include <stdio.h>  // jpeglib.h needs FILE and size_t first
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>  // message codes (JWRN_JPEG_EOF)
#include <png.h>

static int fail(char *message, size_t message_size, const char *text) {
    snprintf(message, message_size, "%s", text);
    return 1;
}

static int too_large(int64_t width, int64_t height, int64_t max_pixels, char *message, size_t message_size) {
    if (width <= 0 || height <= 0) return fail(message, message_size, "image has no pixels");
    if (width * height > max_pixels) {
        snprintf(message, message_size, "image of %lld×%lld pixels exceeds the limit of %lld pixels (decompression bomb?)",
                 (long long)width, (long long)height, (long long)max_pixels);
        return 1;
    }
    return 0;
}

void vitmsn_image_free(vitmsn_image *image) {
    free(image->pixels);
    image->pixels = NULL;
}

// MARK: - EXIF orientation (tag 0x0112 of IFD0 in the APP1 "Exif" block), read with bounds checks.

static unsigned read16(const uint8_t *p, int big) { return big ? (p[0] << 8) | p[1] : p[0] | (p[1] << 8); }
static uint32_t read32(const uint8_t *p, int big) {
    return big ? ((uint32_t)p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3] : p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24);
}

// As Pillow's exif_transpose: the tag's first value, whatever its numeric type (SBYTE, SHORT, LONG,
// RATIONAL, SSHORT, SLONG, SRATIONAL, FLOAT, DOUBLE), counts when it equals a whole 1…8; BYTE, ASCII and
// UNDEFINED values are bytes to Pillow and never match, nor do unknown types or a count of 0.
static int exif_orientation(const uint8_t *block, size_t length) {
    static const size_t type_size[13] = {0, 1, 1, 2, 4, 8, 1, 1, 2, 4, 8, 4, 8};
    if (length < 14 || memcmp(block, "Exif\0\0", 6) != 0) return 0;
    const uint8_t *tiff = block + 6;
    size_t size = length - 6;
    int big;
    if (memcmp(tiff, "MM\0*", 4) == 0) big = 1;
    else if (memcmp(tiff, "II*\0", 4) == 0) big = 0;
    else return 0;
    uint32_t ifd = read32(tiff + 4, big);
    if (ifd > size - 2) return 0;
    unsigned entries = read16(tiff + ifd, big);
    for (unsigned i = 0; i < entries; i++) {
        size_t entry = (size_t)ifd + 2 + 12 * (size_t)i;
        if (entry + 12 > size) return 0;
        if (read16(tiff + entry, big) != 0x0112) continue;
        unsigned type = read16(tiff + entry + 2, big);
        uint32_t count = read32(tiff + entry + 4, big);
        if (type >= 13 || type == 1 || type == 2 || type == 7 || count == 0) return 0;
        size_t width = type_size[type], at = entry + 8;
        if ((uint64_t)count * width > 4) {  // the values lie at an offset
            at = read32(tiff + entry + 8, big);
            if (at > size || width > size - at) return 0;
        }
        const uint8_t *p = tiff + at;
        double value;
        switch (type) {
        case 3: value = read16(p, big); break;
        case 8: value = (int16_t)read16(p, big); break;
        case 4: value = read32(p, big); break;
        case 9: value = (int32_t)read32(p, big); break;
        case 6: value = (int8_t)p[0]; break;
        case 5: case 10: {
            uint32_t numerator = read32(p, big), denominator = read32(p + 4, big);
            if (denominator == 0) return 0;
            value = type == 5 ? (double)numerator / denominator : (double)(int32_t)numerator / (int32_t)denominator;
            break;
        }
        case 11: { uint32_t bits = read32(p, big); float f; memcpy(&f, &bits, 4); value = f; break; }
        default: {  // 12, DOUBLE
            uint64_t bits = big ? ((uint64_t)read32(p, 1) << 32) | read32(p + 4, 1) : ((uint64_t)read32(p + 4, 0) << 32) | read32(p, 0);
            memcpy(&value, &bits, 8);
        }
        }
        return value >= 1 && value <= 8 && value == (int)value ? (int)value : 0;
    }
    return 0;
}

// MARK: - JPEG

struct jpeg_failure {
    struct jpeg_error_mgr manager;
    jmp_buf jump;
    char text[JMSG_LENGTH_MAX];
};

static void jpeg_exit(j_common_ptr cinfo) {
    struct jpeg_failure *failure = (struct jpeg_failure *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, failure->text);
    longjmp(failure->jump, 1);
}

// Warnings are tolerated (as Pillow tolerates them) except premature end of data: libjpeg would pad the
// missing rows with gray, where Pillow raises "image file is truncated".
static void jpeg_warning(j_common_ptr cinfo, int level) {
    if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
        struct jpeg_failure *failure = (struct jpeg_failure *)cinfo->err;
        snprintf(failure->text, sizeof failure->text, "image file is truncated");
        longjmp(failure->jump, 1);
    }
}

int vitmsn_decode_jpeg(const uint8_t *data, size_t size, int64_t max_pixels, vitmsn_image *out, char *message, size_t message_size) {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_failure failure;
    uint8_t *volatile pixels = NULL;
    memset(out, 0, sizeof *out);
    cinfo.err = jpeg_std_error(&failure.manager);
    failure.manager.error_exit = jpeg_exit;
    failure.manager.emit_message = jpeg_warning;
    if (setjmp(failure.jump)) {
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        return fail(message, message_size, failure.text);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&cinfo, TRUE);
    if (too_large(cinfo.image_width, cinfo.image_height, max_pixels, message, message_size)) {
        jpeg_destroy_decompress(&cinfo);
        return 1;
    }
    int orientation = 0;
    for (jpeg_saved_marker_ptr marker = cinfo.marker_list; marker; marker = marker->next) {
        if (marker->marker == JPEG_APP0 + 1 && !orientation) orientation = exif_orientation(marker->data, marker->data_length);
    }
    int cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    cinfo.out_color_space = cinfo.jpeg_color_space == JCS_GRAYSCALE ? JCS_GRAYSCALE : (cmyk ? JCS_CMYK : JCS_RGB);
    jpeg_start_decompress(&cinfo);
    size_t stride = (size_t)cinfo.output_width * cinfo.output_components;
    pixels = malloc(stride * cinfo.output_height);
    if (!pixels) {
        jpeg_destroy_decompress(&cinfo);
        return fail(message, message_size, "out of memory");
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = pixels + stride * cinfo.output_scanline;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    // Adobe CMYK JPEGs store inverted ink values (as Pillow's "CMYK;I" raw mode undoes).
    if (cmyk && cinfo.saw_Adobe_marker) {
        for (size_t i = 0; i < stride * cinfo.output_height; i++) pixels[i] = 255 - pixels[i];
    }
    out->width = (int)cinfo.output_width;
    out->height = (int)cinfo.output_height;
    out->channels = cinfo.output_components;
    out->is_cmyk = cmyk;
    out->exif_orientation = orientation;
    out->pixels = pixels;
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

// MARK: - PNG

struct png_source {
    const uint8_t *data;
    size_t size;
    size_t offset;
    char text[256];
};

static void png_read_memory(png_structp png, png_bytep target, png_size_t length) {
    struct png_source *source = png_get_io_ptr(png);
    if (length > source->size - source->offset) png_error(png, "file is truncated");
    memcpy(target, source->data + source->offset, length);
    source->offset += length;
}

static void png_fail(png_structp png, png_const_charp text) {
    struct png_source *source = png_get_error_ptr(png);
    snprintf(source->text, sizeof source->text, "%s", text);
    png_longjmp(png, 1);
}

static void png_ignore(png_structp png, png_const_charp text) { (void)png; (void)text; }

int vitmsn_decode_png(const uint8_t *data, size_t size, int64_t max_pixels, vitmsn_image *out, char *message, size_t message_size) {
    struct png_source source = {data, size, 0, "invalid PNG"};
    uint8_t *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    memset(out, 0, sizeof *out);
    if (size < 8 || png_sig_cmp(data, 0, 8) != 0) return fail(message, message_size, "not a PNG file (bad signature)");
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &source, png_fail, png_ignore);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return fail(message, message_size, "out of memory");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(pixels);
        free(rows);
        return fail(message, message_size, source.text);
    }
    png_set_read_fn(png, &source, png_read_memory);
    png_read_info(png, info);
    png_uint_32 width, height;
    int depth, color;
    png_get_IHDR(png, info, &width, &height, &depth, &color, NULL, NULL, NULL);
    if (too_large(width, height, max_pixels, message, message_size)) {
        png_destroy_read_struct(&png, &info, NULL);
        return 1;
    }
    // As Pillow opens them: palettes become RGB (tRNS ignored, as convert("RGB") ignores it), low-depth
    // gray is scaled to 8 bits, 16-bit colour keeps its high byte. 16-bit gray is Pillow's "I;16", whose
    // conversion to 8 bits clips at 255 rather than scaling: it is read whole and clipped below.
    int gray16 = color == PNG_COLOR_TYPE_GRAY && depth == 16;
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16 && !gray16) png_set_strip_16(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int channels = png_get_channels(png, info);
    size_t stride = png_get_rowbytes(png, info);
    if (stride != (size_t)width * channels * (gray16 ? 2 : 1)) png_error(png, "unexpected row layout");
    pixels = malloc(stride * height);
    rows = malloc(sizeof(png_bytep) * height);
    if (!pixels || !rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < height; y++) rows[y] = pixels + stride * y;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    if (gray16) {  // big-endian samples, clipped to 8 bits in place (the write index never passes the read one)
        for (size_t i = 0; i < (size_t)width * height; i++) {
            unsigned value = (pixels[2 * i] << 8) | pixels[2 * i + 1];
            pixels[i] = value > 255 ? 255 : (uint8_t)value;
        }
    }
    out->width = (int)width;
    out->height = (int)height;
    out->channels = channels;
    out->pixels = pixels;
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    return 0;
}

int vitmsn_encode_png(const uint8_t *pixels, int width, int height, int channels, const char *path, char *message, size_t message_size) {
    static const int color_types[] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGBA};
    if (width <= 0 || height <= 0 || channels < 1 || channels > 4) return fail(message, message_size, "no pixels, or not 1 to 4 channels");
    struct png_source source = {NULL, 0, 0, "could not write the PNG"};
    FILE *volatile file = fopen(path, "wb");
    if (!file) return fail(message, message_size, "cannot open the file for writing");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &source, png_fail, png_ignore);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        fclose(file);
        return fail(message, message_size, "out of memory");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(file);
        return fail(message, message_size, source.text);
    }
    png_init_io(png, file);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, color_types[channels], PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < height; y++) png_write_row(png, pixels + (size_t)y * width * channels);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (fclose(file) != 0) return fail(message, message_size, "could not finish writing the file");
    return 0;
}
