// BMP decoding, written here (Debian has no BMP library; Pillow has its own reader, followed case by case):
// the OS/2 (12-byte) and Windows (40 to 124-byte) headers; 1, 4 and 8-bit palettes, raw or RLE-compressed;
// 16-bit 5-5-5 and 5-6-5; 24-bit; 32-bit with alpha ignored unless bit fields name it, as Pillow does.
// Every size and offset is checked against the file before use.
#include "common.h"

#include <stdlib.h>
#include <string.h>

static uint32_t le32(const uint8_t *p) { return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24); }
static unsigned le16(const uint8_t *p) { return p[0] | (p[1] << 8); }

enum { RAW = 0, RLE8 = 1, RLE4 = 2, BITFIELDS = 3 };

// Pillow's RLE decoder: runs and literal runs of palette indices, end-of-line, end-of-bitmap and delta
// escapes, in file row order; skipped pixels stay 0. `offset` is the data's place in the file (literal runs
// end on an even one). Returns the number of indices produced.
static size_t decode_rle(const uint8_t *data, size_t size, size_t offset, int rle4, int64_t width, size_t total, uint8_t *indices) {
    size_t produced = 0, at = 0;
    int64_t x = 0;
    while (produced < total && at + 2 <= size) {
        unsigned count = data[at], value = data[at + 1];
        at += 2;
        if (count) {  // a run: one index (RLE8) or two alternating ones (RLE4)
            if (x + count > width) count = (unsigned)(width - x > 0 ? width - x : 0);
            for (unsigned i = 0; i < count && produced < total; i++) indices[produced++] = rle4 ? (i % 2 ? value & 15 : value >> 4) : value;
            x += count;
        } else if (value == 0) {  // end of line: pad the row with 0
            while (produced % (size_t)width && produced < total) indices[produced++] = 0;
            x = 0;
        } else if (value == 1) {  // end of bitmap
            break;
        } else if (value == 2) {  // delta: right, up
            if (at + 2 > size) break;
            size_t skip = data[at] + (size_t)data[at + 1] * (size_t)width;
            at += 2;
            if (skip > total - produced) skip = total - produced;
            memset(indices + produced, 0, skip);
            produced += skip;
            x = (int64_t)(produced % (size_t)width);
        } else {  // a literal run of `value` indices, padded to an even byte count
            size_t wanted = value < total - produced ? value : total - produced;
            size_t bytes = rle4 ? (wanted + 1) / 2 : wanted, read = bytes < size - at ? bytes : size - at;
            for (size_t i = 0; i < read; i++) {
                if (rle4) {
                    indices[produced++] = data[at + i] >> 4;
                    if (2 * i + 1 < wanted) indices[produced++] = data[at + i] & 15;
                } else {
                    indices[produced++] = data[at + i];
                }
            }
            at += read;
            if (read < bytes || produced == total) break;
            x += value;
            if ((offset + at) % 2) at++;  // to an even offset in the file
        }
    }
    return produced;
}

int vitmsn_decode_bmp(const uint8_t *data, size_t size, int64_t max_pixels, vitmsn_image *out, char *message, size_t message_size) {
    memset(out, 0, sizeof *out);
    if (size < 18 || data[0] != 'B' || data[1] != 'M') return codec_fail(message, message_size, "not a BMP file");
    uint32_t offset = le32(data + 10), header = le32(data + 14);
    if (header != 12 && header != 40 && header != 52 && header != 56 && header != 64 && header != 108 && header != 124) {
        snprintf(message, message_size, "unsupported BMP header type (%u)", header);
        return 1;
    }
    if (size < 14 + (size_t)header) return codec_fail(message, message_size, "BMP header is truncated");
    const uint8_t *h = data + 18;  // the header after its size field
    size_t position = 14 + (size_t)header;
    int64_t width, height;
    unsigned bits, compression = RAW, palette_entry = 4;
    uint32_t colors = 0, masks[4] = {0, 0, 0, 0};
    int top_down = 0;
    if (header == 12) {
        width = le16(h);
        height = le16(h + 2);
        bits = le16(h + 6);
        palette_entry = 3;
    } else {
        top_down = h[7] == 0xFF;  // a negative height, as Pillow tells it
        width = le32(h);
        height = top_down ? (int64_t)4294967296 - le32(h + 4) : le32(h + 4);
        bits = le16(h + 10);
        compression = le32(h + 12);
        colors = le32(h + 28);
        if (compression == BITFIELDS) {
            if (header >= 52) {
                for (int i = 0; i < (header >= 56 ? 4 : 3); i++) masks[i] = le32(h + 36 + 4 * i);
            } else {  // the three masks follow a 40-byte header
                if (size < position + 12) return codec_fail(message, message_size, "BMP bit fields are truncated");
                for (int i = 0; i < 3; i++) masks[i] = le32(data + position + 4 * i);
                position += 12;
            }
        }
    }
    if (bits != 1 && bits != 4 && bits != 8 && bits != 16 && bits != 24 && bits != 32) {
        snprintf(message, message_size, "unsupported BMP pixel depth (%u)", bits);
        return 1;
    }
    if (codec_too_large(width, height, max_pixels, message, message_size)) return 1;
    if (colors == 0) colors = 1u << (bits > 16 ? 16 : bits);  // only read for paletted depths
    if (offset == 14 + header && bits <= 8) offset += palette_entry * colors;

    // The pixel layout, from the depth and the bit fields (Pillow's supported masks only).
    int paletted = bits <= 8, channels = 3, alpha = -1;
    int shift[4] = {16, 8, 0, -1};  // where R, G, B (and A) sit in a little-endian 32 or 24-bit pixel
    if (compression == BITFIELDS) {
        static const uint32_t known32[][4] = {
            {0xFF0000, 0xFF00, 0xFF, 0}, {0xFF000000, 0xFF0000, 0xFF00, 0}, {0xFF000000, 0xFF00, 0xFF, 0},
            {0xFF000000, 0xFF0000, 0xFF00, 0xFF}, {0xFF, 0xFF00, 0xFF0000, 0xFF000000},
            {0xFF0000, 0xFF00, 0xFF, 0xFF000000}, {0xFF000000, 0xFF00, 0xFF, 0xFF0000}};
        int supported = 0;
        if (bits == 32) {
            if (!masks[0] && !masks[1] && !masks[2] && !masks[3]) {  // Pillow reads all-zero masks as BGRA
                supported = 1, alpha = shift[3] = 24;
            }
            for (size_t k = 0; k < sizeof known32 / sizeof known32[0] && !supported; k++) {
                if (memcmp(masks, known32[k], sizeof masks) != 0) continue;
                supported = 1;
                for (int c = 0; c < 4; c++) shift[c] = known32[k][c] ? __builtin_ctz(known32[k][c]) : -1;
                alpha = shift[3];
            }
        } else if (bits == 24) {
            supported = masks[0] == 0xFF0000 && masks[1] == 0xFF00 && masks[2] == 0xFF;
        } else if (bits == 16) {
            supported = masks[1] == 0x3E0 || masks[1] == 0x7E0 ? masks[2] == 0x1F && masks[0] == (masks[1] == 0x7E0 ? 0xF800u : 0x7C00u) : 0;
        }
        if (!supported) return codec_fail(message, message_size, "unsupported BMP bit fields layout");
        if (alpha >= 0) channels = 4;
    } else if (compression == RLE8 || compression == RLE4) {
        if (!paletted) return codec_fail(message, message_size, "BMP run-length compression needs a palette");
    } else if (compression != RAW) {
        snprintf(message, message_size, "unsupported BMP compression (%u)", compression);
        return 1;
    }
    int green6 = bits == 16 && compression == BITFIELDS && masks[1] == 0x7E0;

    // Palettes: Pillow reads a grey ramp (or black and white for two colours) as L or 1, given here as L; the
    // rest as P, looked up here into RGB, indices past the file's colours being black as in Pillow.
    uint8_t palette[256][3];
    for (int i = 0; i < 256; i++) palette[i][0] = palette[i][1] = palette[i][2] = (uint8_t)i;
    int bilevel = 0;
    if (paletted) {
        if (colors > 256) {
            snprintf(message, message_size, "unsupported BMP palette size (%u colours)", colors);
            return 1;
        }
        size_t palette_size = (size_t)palette_entry * colors;
        if (size < position || size - position < palette_size) return codec_fail(message, message_size, "BMP palette is truncated");
        int grey = 1;
        for (uint32_t i = 0; i < colors; i++) {
            const uint8_t *entry = data + position + (size_t)palette_entry * i;  // B, G, R
            unsigned expected = colors == 2 ? 255 * i : i;
            grey &= entry[0] == expected && entry[1] == expected && entry[2] == expected;
        }
        // Pillow reads a grey palette's pixels as 1-bit (two colours) or 8-bit (more) whatever the depth, and
        // has no RLE reader for the 1-bit case: those mismatches are refused rather than guessed.
        bilevel = grey && colors <= 2;
        int compressed = compression != RAW;
        if (grey && (bilevel ? bits != 1 || compressed : bits != 8 && !compressed)) {
            snprintf(message, message_size, "unsupported BMP: %u-bit pixels with a %u-level grey palette%s", bits, colors, compressed ? " and RLE" : "");
            return 1;
        }
        if (grey) channels = 1;
        else {
            memset(palette, 0, sizeof palette);
            for (uint32_t i = 0; i < colors; i++) {
                const uint8_t *entry = data + position + (size_t)palette_entry * i;
                palette[i][0] = entry[2], palette[i][1] = entry[1], palette[i][2] = entry[0];
            }
        }
        position += palette_size;
    }
    if (offset == 0) offset = (uint32_t)position;
    if (offset > size) return codec_fail(message, message_size, "BMP pixel data offset lies past the end of the file");

    size_t count = (size_t)(width * height);
    uint8_t *pixels = malloc(count * channels);
    uint8_t *indices = paletted ? malloc(count) : NULL;
    if (!pixels || (paletted && !indices)) {
        free(pixels);
        free(indices);
        return codec_fail(message, message_size, "out of memory");
    }
    const uint8_t *body = data + offset;
    size_t body_size = size - offset;
    if (compression == RLE8 || compression == RLE4) {
        if (decode_rle(body, body_size, offset, compression == RLE4, width, count, indices) < count) {
            free(pixels);
            free(indices);
            return codec_fail(message, message_size, "not enough image data (truncated RLE)");
        }
    } else {
        size_t stride = (((size_t)width * bits + 31) >> 3) & ~(size_t)3;
        if (stride == 0 || body_size / stride < (size_t)height) {
            free(pixels);
            free(indices);
            return codec_fail(message, message_size, "image file is truncated");
        }
        for (int64_t y = 0; y < height; y++) {
            const uint8_t *row = body + stride * (size_t)y;
            size_t target = (size_t)(y * width);
            for (int64_t x = 0; x < width; x++, target++) {
                if (paletted) {
                    unsigned per_byte = 8 / bits, slot = (unsigned)(x % per_byte);
                    indices[target] = (row[x / per_byte] >> (8 - bits * (slot + 1))) & ((1u << bits) - 1);
                    continue;
                }
                uint8_t *p = pixels + target * channels;
                if (bits == 16) {  // Pillow's BGR;15 and BGR;16 unpacking: value · 255 / max
                    unsigned v = le16(row + 2 * x);
                    p[2] = (uint8_t)((v & 31) * 255 / 31);
                    p[1] = (uint8_t)(green6 ? ((v >> 5) & 63) * 255 / 63 : ((v >> 5) & 31) * 255 / 31);
                    p[0] = (uint8_t)((green6 ? (v >> 11) & 31 : (v >> 10) & 31) * 255 / 31);
                } else {
                    uint32_t v = bits == 32 ? le32(row + 4 * x) : row[3 * x] | (row[3 * x + 1] << 8) | ((uint32_t)row[3 * x + 2] << 16);
                    for (int c = 0; c < channels; c++) p[c] = (uint8_t)(v >> shift[c]);
                }
            }
        }
    }
    if (paletted) {
        for (size_t i = 0; i < count; i++) {
            const uint8_t *colour = bilevel ? palette[indices[i] ? 255 : 0] : palette[indices[i]];
            memcpy(pixels + channels * i, colour, channels);
        }
        free(indices);
    }
    if (!top_down) {  // rows are stored bottom-up
        size_t row_bytes = (size_t)width * channels;
        uint8_t *swap = malloc(row_bytes);
        if (!swap) {
            free(pixels);
            return codec_fail(message, message_size, "out of memory");
        }
        for (int64_t y = 0; y < height / 2; y++) {
            uint8_t *a = pixels + (size_t)y * row_bytes, *b = pixels + (size_t)(height - 1 - y) * row_bytes;
            memcpy(swap, a, row_bytes), memcpy(a, b, row_bytes), memcpy(b, swap, row_bytes);
        }
        free(swap);
    }
    out->width = (int)width;
    out->height = (int)height;
    out->channels = channels;
    out->pixels = pixels;
    return 0;
}
