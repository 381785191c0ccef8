// libFuzzer harness for the JPEG/PNG wrappers (and the EXIF parser): every input must decode or fail
// cleanly, under AddressSanitizer. Built and run by scripts/fuzz.sh.
#include "CImageCodecs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    vitmsn_image image;
    char message[256];
    const int64_t max_pixels = 1 << 22; // keep single inputs cheap
    if (vitmsn_decode_jpeg(data, size, max_pixels, &image, message, sizeof message) == 0) vitmsn_image_free(&image);
    if (vitmsn_decode_png(data, size, max_pixels, &image, message, sizeof message) == 0) vitmsn_image_free(&image);
    return 0;
}
