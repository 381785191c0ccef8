// What the decoders share: error reporting, the pixel limit, and the EXIF orientation reader.
#include "common.h"

#include <stdlib.h>
#include <string.h>

int codec_fail(char *message, size_t message_size, const char *text) {
    snprintf(message, message_size, "%s", text);
    return 1;
}

int codec_too_large(int64_t width, int64_t height, int64_t max_pixels, char *message, size_t message_size) {
    if (width <= 0 || height <= 0) return codec_fail(message, message_size, "image has no pixels");
    if (width > max_pixels / height) {  // width · height > max_pixels, without overflow
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
int codec_exif_orientation(const uint8_t *block, size_t length, int require_prefix) {
    static const size_t type_size[13] = {0, 1, 1, 2, 4, 8, 1, 1, 2, 4, 8, 4, 8};
    int prefixed = length >= 6 && memcmp(block, "Exif\0\0", 6) == 0;
    if (require_prefix && !prefixed) return 0;
    const uint8_t *tiff = prefixed ? block + 6 : block;
    size_t size = prefixed ? length - 6 : length;
    if (size < 8) return 0;
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

