// PNG decoding and encoding with libpng (errors by longjmp, caught here as in jpeg.c).
#include "common.h"

#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>

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
    if (size < 8 || png_sig_cmp(data, 0, 8) != 0) return codec_fail(message, message_size, "not a PNG file (bad signature)");
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &source, png_fail, png_ignore);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return codec_fail(message, message_size, "out of memory");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(pixels);
        free(rows);
        return codec_fail(message, message_size, source.text);
    }
    png_set_read_fn(png, &source, png_read_memory);
    png_read_info(png, info);
    png_uint_32 width, height;
    int depth, color;
    png_get_IHDR(png, info, &width, &height, &depth, &color, NULL, NULL, NULL);
    if (codec_too_large(width, height, max_pixels, message, message_size)) {
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
    png_read_end(png, info);  // with info: an eXIf chunk after the pixels counts too, as in Pillow
    png_uint_32 exif_size = 0;
    png_bytep exif = NULL;
    if (png_get_eXIf_1(png, info, &exif_size, &exif) && exif) out->exif_orientation = codec_exif_orientation(exif, exif_size, 0);
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
    if (width <= 0 || height <= 0 || channels < 1 || channels > 4) return codec_fail(message, message_size, "no pixels, or not 1 to 4 channels");
    struct png_source source = {NULL, 0, 0, "could not write the PNG"};
    FILE *volatile file = fopen(path, "wb");
    if (!file) return codec_fail(message, message_size, "cannot open the file for writing");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &source, png_fail, png_ignore);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        fclose(file);
        return codec_fail(message, message_size, "out of memory");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(file);
        return codec_fail(message, message_size, source.text);
    }
    png_init_io(png, file);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, color_types[channels], PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < height; y++) png_write_row(png, pixels + (size_t)y * width * channels);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (fclose(file) != 0) return codec_fail(message, message_size, "could not finish writing the file");
    return 0;
}
