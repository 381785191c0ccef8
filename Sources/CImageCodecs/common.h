// Helpers shared by the decoders (internal to CImageCodecs).
#ifndef VITMSN_CODECS_COMMON_H
#define VITMSN_CODECS_COMMON_H

#include "CImageCodecs.h"

#include <stdio.h>

/// Writes text into message and returns 1 (a failed decode).
int codec_fail(char *message, size_t message_size, const char *text);

/// Refuses an image with no pixels or more than max_pixels, before any pixel memory is taken.
int codec_too_large(int64_t width, int64_t height, int64_t max_pixels, char *message, size_t message_size);

/// The orientation (1–8) in IFD0 of a TIFF-structured block, as Pillow's exif_transpose reads it; 0 when
/// absent or unreadable. A leading "Exif\0\0" is skipped, and required when require_prefix is set (JPEG APP1).
int codec_exif_orientation(const uint8_t *block, size_t length, int require_prefix);

#endif
