// WebP decoding with libwebp's animation decoder, as Pillow opens every WebP file: the first frame composed
// on its canvas in RGBA, kept as RGB when the file declares no alpha. An EXIF chunk's orientation counts.
#include "common.h"

#include <stdlib.h>
#include <string.h>

#include <webp/decode.h>
#include <webp/demux.h>

int vitmsn_decode_webp(const uint8_t *data, size_t size, int64_t max_pixels, vitmsn_image *out, char *message, size_t message_size) {
    memset(out, 0, sizeof *out);
    WebPBitstreamFeatures features;
    if (WebPGetFeatures(data, size, &features) != VP8_STATUS_OK) return codec_fail(message, message_size, "invalid or truncated WebP file");
    // The decoder allocates its canvas when created, so the size is checked first (from the VP8X/VP8/VP8L header).
    if (codec_too_large(features.width, features.height, max_pixels, message, message_size)) return 1;
    WebPData source = {data, size};
    WebPAnimDecoder *decoder = WebPAnimDecoderNew(&source, NULL);  // default options: RGBA, as Pillow
    if (!decoder) return codec_fail(message, message_size, "invalid or truncated WebP file");
    WebPAnimInfo info;
    uint8_t *canvas = NULL;
    int timestamp = 0;
    int status = 0;
    if (!WebPAnimDecoderGetInfo(decoder, &info)) status = codec_fail(message, message_size, "invalid WebP file");
    else if (codec_too_large(info.canvas_width, info.canvas_height, max_pixels, message, message_size)) status = 1;
    else if (!WebPAnimDecoderGetNext(decoder, &canvas, &timestamp)) status = codec_fail(message, message_size, "failed to decode the WebP frame (truncated or corrupt)");
    if (status) {
        WebPAnimDecoderDelete(decoder);
        return 1;
    }
    int channels = features.has_alpha ? 4 : 3;
    size_t count = (size_t)info.canvas_width * info.canvas_height;
    uint8_t *pixels = malloc(count * channels);
    if (!pixels) {
        WebPAnimDecoderDelete(decoder);
        return codec_fail(message, message_size, "out of memory");
    }
    for (size_t i = 0; i < count; i++) memcpy(pixels + i * channels, canvas + 4 * i, channels);
    WebPChunkIterator exif;
    if (WebPDemuxGetChunk(WebPAnimDecoderGetDemuxer(decoder), "EXIF", 1, &exif)) {
        out->exif_orientation = codec_exif_orientation(exif.chunk.bytes, exif.chunk.size, 0);
        WebPDemuxReleaseChunkIterator(&exif);
    }
    WebPAnimDecoderDelete(decoder);
    out->width = (int)info.canvas_width;
    out->height = (int)info.canvas_height;
    out->channels = channels;
    out->pixels = pixels;
    return 0;
}
