#ifndef VITMSN_CIMAGECODECS_H
#define VITMSN_CIMAGECODECS_H

#include <stddef.h>
#include <stdint.h>

/// 8-bit interleaved pixels in the mode Pillow opens the file in: 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA, or CMYK for
/// JPEG and TIFF). Palette images (GIF, BMP, PNG, TIFF) come already looked up, as RGB.
typedef struct {
    int width;
    int height;
    int channels;
    int is_cmyk;          // JPEG CMYK/YCCK (un-inverted when the file has an Adobe marker) or TIFF CMYK
    int exif_orientation; // 1–8 from the EXIF block (JPEG APP1, PNG eXIf, WebP EXIF) or TIFF tag, 0 when absent
    uint8_t *pixels;      // malloc'ed, width·height·channels bytes; release with vitmsn_image_free
} vitmsn_image;

/// Decode a whole file held in memory. Return 0 on success; otherwise a message (NUL-terminated, at most
/// message_size bytes) says why. Images above max_pixels are refused before any pixel memory is taken.
int vitmsn_decode_jpeg(const uint8_t *data, size_t size, int64_t max_pixels, vitmsn_image *out, char *message, size_t message_size);
int vitmsn_decode_png(const uint8_t *data, size_t size, int64_t max_pixels, vitmsn_image *out, char *message, size_t message_size);
int vitmsn_decode_webp(const uint8_t *data, size_t size, int64_t max_pixels, vitmsn_image *out, char *message, size_t message_size);
int vitmsn_decode_gif(const uint8_t *data, size_t size, int64_t max_pixels, vitmsn_image *out, char *message, size_t message_size);
int vitmsn_decode_bmp(const uint8_t *data, size_t size, int64_t max_pixels, vitmsn_image *out, char *message, size_t message_size);
int vitmsn_decode_tiff(const uint8_t *data, size_t size, int64_t max_pixels, vitmsn_image *out, char *message, size_t message_size);

void vitmsn_image_free(vitmsn_image *image);

/// Write height·width·channels interleaved bytes (1 L, 2 LA, 3 RGB, 4 RGBA) as an 8-bit PNG file. Return 0
/// on success, otherwise a message as above.
int vitmsn_encode_png(const uint8_t *pixels, int width, int height, int channels, const char *path, char *message, size_t message_size);

#endif
