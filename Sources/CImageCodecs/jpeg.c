// JPEG decoding with libjpeg-turbo, which reports errors by longjmp: Swift cannot catch that, so every call
// into it happens here behind a setjmp, and only a status and a message go back.
#include "common.h"

#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>  // after stdio.h (common.h): it needs FILE and size_t
#include <jerror.h>   // message codes (JWRN_JPEG_EOF)

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
        return codec_fail(message, message_size, failure.text);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&cinfo, TRUE);
    if (codec_too_large(cinfo.image_width, cinfo.image_height, max_pixels, message, message_size)) {
        jpeg_destroy_decompress(&cinfo);
        return 1;
    }
    int orientation = 0;
    for (jpeg_saved_marker_ptr marker = cinfo.marker_list; marker; marker = marker->next) {
        if (marker->marker == JPEG_APP0 + 1 && !orientation) orientation = codec_exif_orientation(marker->data, marker->data_length, 1);
    }
    int cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    cinfo.out_color_space = cinfo.jpeg_color_space == JCS_GRAYSCALE ? JCS_GRAYSCALE : (cmyk ? JCS_CMYK : JCS_RGB);
    jpeg_start_decompress(&cinfo);
    size_t stride = (size_t)cinfo.output_width * cinfo.output_components;
    pixels = malloc(stride * cinfo.output_height);
    if (!pixels) {
        jpeg_destroy_decompress(&cinfo);
        return codec_fail(message, message_size, "out of memory");
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

