// GIF decoding with giflib: the first frame only, as Pillow opens it. Pillow gives that frame in mode P
// on the logical screen (grown to hold the frame if it sticks out), the area outside the frame holding the
// frame's transparent index or else 0; convert("RGB") then looks every index up in the colour table (black
// past its end). The result here is that RGB image, or the indices themselves (mode L) when the colour table
// is a grey ramp or absent, as Pillow gives them.
#include "common.h"

#include <stdlib.h>
#include <string.h>

#include <gif_lib.h>

struct gif_source {
    const uint8_t *data;
    size_t size;
    size_t offset;
};

static int gif_read_memory(GifFileType *gif, GifByteType *target, int length) {
    struct gif_source *source = gif->UserData;
    size_t available = source->size - source->offset;
    size_t count = length < 0 ? 0 : ((size_t)length < available ? (size_t)length : available);
    memcpy(target, source->data + source->offset, count);
    source->offset += count;
    return (int)count;
}

static int gif_error(GifFileType *gif, int error, char *message, size_t message_size) {
    const char *text = GifErrorString(error);
    snprintf(message, message_size, "invalid GIF: %s", text ? text : "unknown error");
    if (gif) DGifCloseFile(gif, &error);
    return 1;
}

int vitmsn_decode_gif(const uint8_t *data, size_t size, int64_t max_pixels, vitmsn_image *out, char *message, size_t message_size) {
    memset(out, 0, sizeof *out);
    struct gif_source source = {data, size, 0};
    int error = 0;
    GifFileType *gif = DGifOpen(&source, gif_read_memory, &error);
    if (!gif) return gif_error(NULL, error, message, message_size);
    int transparent = -1;
    GifRecordType record;
    do {  // extensions up to the first image; the last graphic control extension gives its transparent index
        if (DGifGetRecordType(gif, &record) == GIF_ERROR) return gif_error(gif, gif->Error, message, message_size);
        if (record == EXTENSION_RECORD_TYPE) {
            int code;
            GifByteType *block;
            if (DGifGetExtension(gif, &code, &block) == GIF_ERROR) return gif_error(gif, gif->Error, message, message_size);
            if (code == GRAPHICS_EXT_FUNC_CODE && block && block[0] >= 4 && (block[1] & 1)) transparent = block[4];
            while (block) {
                if (DGifGetExtensionNext(gif, &block) == GIF_ERROR) return gif_error(gif, gif->Error, message, message_size);
            }
        } else if (record == TERMINATE_RECORD_TYPE) {
            DGifCloseFile(gif, &error);
            return codec_fail(message, message_size, "GIF file holds no image");
        }
    } while (record != IMAGE_DESC_RECORD_TYPE);
    if (DGifGetImageDesc(gif) == GIF_ERROR) return gif_error(gif, gif->Error, message, message_size);
    const GifImageDesc frame = gif->Image;
    int64_t width = gif->SWidth > frame.Left + frame.Width ? gif->SWidth : frame.Left + frame.Width;
    int64_t height = gif->SHeight > frame.Top + frame.Height ? gif->SHeight : frame.Top + frame.Height;
    if (frame.Width <= 0 || frame.Height <= 0) {
        DGifCloseFile(gif, &error);
        return codec_fail(message, message_size, "GIF frame has no pixels");
    }
    if (codec_too_large(width, height, max_pixels, message, message_size)) {
        DGifCloseFile(gif, &error);
        return 1;
    }
    uint8_t *indices = malloc((size_t)(width * height));
    const ColorMapObject *colors = frame.ColorMap ? frame.ColorMap : gif->SColorMap;
    int grey = 1;
    for (int i = 0; colors && i < colors->ColorCount && grey; i++) {
        grey = colors->Colors[i].Red == i && colors->Colors[i].Green == i && colors->Colors[i].Blue == i;
    }
    int channels = grey ? 1 : 3;
    uint8_t *pixels = malloc((size_t)(width * height) * channels);
    if (!indices || !pixels) {
        free(indices);
        free(pixels);
        DGifCloseFile(gif, &error);
        return codec_fail(message, message_size, "out of memory");
    }
    memset(indices, transparent < 0 ? 0 : transparent, (size_t)(width * height));
    // Interlaced frames store rows 0, 8, 16…, then 4, 12…, then 2, 6…, then the odd rows.
    static const int first_row[4] = {0, 4, 2, 1}, row_step[4] = {8, 8, 4, 2};
    int passes = frame.Interlace ? 4 : 1;
    for (int pass = 0; pass < passes; pass++) {
        int step = frame.Interlace ? row_step[pass] : 1;
        for (int y = frame.Interlace ? first_row[pass] : 0; y < frame.Height; y += step) {
            uint8_t *row = indices + (size_t)(frame.Top + y) * width + frame.Left;
            if (DGifGetLine(gif, row, frame.Width) == GIF_ERROR) {
                free(indices);
                free(pixels);
                return gif_error(gif, gif->Error, message, message_size);
            }
        }
    }
    uint8_t palette[256][3];
    for (int i = 0; i < 256; i++) palette[i][0] = palette[i][1] = palette[i][2] = (uint8_t)i;
    if (!grey) memset(palette, 0, sizeof palette);  // indices past the colour table are black, as in Pillow
    for (int i = 0; colors && i < colors->ColorCount && i < 256; i++) {
        palette[i][0] = colors->Colors[i].Red;
        palette[i][1] = colors->Colors[i].Green;
        palette[i][2] = colors->Colors[i].Blue;
    }
    for (size_t i = 0; i < (size_t)(width * height); i++) memcpy(pixels + channels * i, palette[indices[i]], channels);
    free(indices);
    DGifCloseFile(gif, &error);
    out->width = (int)width;
    out->height = (int)height;
    out->channels = channels;
    out->pixels = pixels;
    return 0;
}
