/*
 * The two C decoders the worker runs, behind one narrow call each: a compressed frame in, the
 * samples of the image the caller expects out (interleaved, little endian, `bytes_per_sample`
 * bytes each), or a non-zero return with a message. Each decoder's own header is read first and
 * must describe exactly the expected image before a sample is decoded, so neither library
 * sizes anything from a stream that disagrees with the DICOM header.
 *
 * Runs only inside the sandboxed worker (no files, no network, capped memory): a bug here is
 * contained there.
 */
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <charls/charls.h>

/* GDCM's IJG 6b build with 12-bit samples (JSAMPLE is a short); its symbols are renamed
 * (gdcmjpeg12_*) by the header itself. */
#include "jpeglib.h"
#include "jerror.h"

static int fail(char *msg, size_t msg_len, const char *what)
{
    if (msg_len > 0) {
        snprintf(msg, msg_len, "%s", what);
    }
    return 1;
}

/* Spreads `n` one-byte samples at the start of `buf` to two-byte little-endian ones, in place
 * (from the end, so nothing is overwritten before it is read). */
static void widen(uint8_t *buf, size_t n)
{
    for (size_t i = n; i-- > 0;) {
        buf[2 * i] = buf[i];
        buf[2 * i + 1] = 0;
    }
}

static int jpegls_decode(const uint8_t *src, size_t src_len, uint8_t *dst, size_t dst_len,
                         uint32_t width, uint32_t height, int32_t components,
                        int32_t bytes_per_sample, char *msg, size_t msg_len)
{
    charls_jpegls_decoder *d = charls_jpegls_decoder_create();
    if (d == NULL) {
        return fail(msg, msg_len, "JPEG-LS: decoder could not be created");
    }
    int rc = 1;
    uint8_t *planar = NULL;
    charls_jpegls_errc e = charls_jpegls_decoder_set_source_buffer(d, src, src_len);
    if (e == CHARLS_JPEGLS_ERRC_SUCCESS) {
        e = charls_jpegls_decoder_read_header(d);
    }
    charls_frame_info fi;
    if (e == CHARLS_JPEGLS_ERRC_SUCCESS) {
        e = charls_jpegls_decoder_get_frame_info(d, &fi);
    }
    charls_interleave_mode mode = CHARLS_INTERLEAVE_MODE_NONE;
    if (e == CHARLS_JPEGLS_ERRC_SUCCESS) {
        e = charls_jpegls_decoder_get_interleave_mode(d, &mode);
    }
    if (e != CHARLS_JPEGLS_ERRC_SUCCESS) {
        snprintf(msg, msg_len, "JPEG-LS: %s", charls_get_error_message(e));
        goto out;
    }
    if (fi.width != width || fi.height != height || fi.component_count != components) {
        snprintf(msg, msg_len,
                 "JPEG-LS: the stream is %ux%u with %d components, the DICOM header says "
                 "%ux%u with %d",
                 fi.width, fi.height, fi.component_count, width, height, components);
        goto out;
    }
    if (fi.bits_per_sample < 2 || fi.bits_per_sample > 8 * bytes_per_sample) {
        snprintf(msg, msg_len, "JPEG-LS: %d-bit samples do not fit %d bytes", fi.bits_per_sample,
                 bytes_per_sample);
        goto out;
    }
    /* CharLS writes one byte per sample up to 8 bits, else two. */
    size_t stream_bytes = fi.bits_per_sample > 8 ? 2 : 1;
    size_t samples = (size_t)width * height * (size_t)components;
    if (samples * (size_t)bytes_per_sample != dst_len) {
        rc = fail(msg, msg_len, "JPEG-LS: output buffer does not match the image");
        goto out;
    }
    size_t need = 0;
    e = charls_jpegls_decoder_get_destination_size(d, 0, &need);
    if (e != CHARLS_JPEGLS_ERRC_SUCCESS || need != samples * stream_bytes) {
        rc = fail(msg, msg_len, "JPEG-LS: the decoder's output size does not match the image");
        goto out;
    }
    /* Interleave mode none decodes component after component: into a scratch buffer, then
     * interleaved. Line and sample modes come out interleaved by pixel. */
    int planes = mode == CHARLS_INTERLEAVE_MODE_NONE && components > 1;
    uint8_t *target = dst;
    if (planes) {
        planar = malloc(need);
        if (planar == NULL) {
            rc = fail(msg, msg_len, "JPEG-LS: out of memory");
            goto out;
        }
        target = planar;
    }
    e = charls_jpegls_decoder_decode_to_buffer(d, target, need, 0);
    if (e != CHARLS_JPEGLS_ERRC_SUCCESS) {
        snprintf(msg, msg_len, "JPEG-LS: %s", charls_get_error_message(e));
        goto out;
    }
    if (planes) {
        size_t pixels = (size_t)width * height;
        for (size_t c = 0; c < (size_t)components; c++) {
            for (size_t p = 0; p < pixels; p++) {
                memcpy(dst + (p * components + c) * stream_bytes,
                       planar + (c * pixels + p) * stream_bytes, stream_bytes);
            }
        }
    }
    if (stream_bytes == 1 && bytes_per_sample == 2) {
        widen(dst, samples);
    }
    rc = 0;
out:
    free(planar);
    charls_jpegls_decoder_destroy(d);
    return rc;
}

/* IJG's errors end in error_exit, which must not return: it jumps back to the call. */
struct rapha_jpeg_error {
    struct jpeg_error_mgr pub;
    jmp_buf back;
    char *msg;
    size_t msg_len;
};

static void on_error(j_common_ptr cinfo)
{
    struct rapha_jpeg_error *err = (struct rapha_jpeg_error *)cinfo->err;
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    snprintf(err->msg, err->msg_len, "12-bit JPEG: %s", text);
    longjmp(err->back, 1);
}

/* Warnings and traces are not printed. */
static void on_message(j_common_ptr cinfo) { (void)cinfo; }

/* The whole frame is in memory: the source is handed over at once, and a decoder that asks
 * for more has met a truncated stream, which is an error (not a grey tail). */
static void src_init(j_decompress_ptr cinfo) { (void)cinfo; }
static boolean src_fill(j_decompress_ptr cinfo)
{
    ERREXIT(cinfo, JERR_INPUT_EOF);
    return FALSE;
}
static void src_skip(j_decompress_ptr cinfo, long n)
{
    struct jpeg_source_mgr *s = cinfo->src;
    if (n <= 0) {
        return;
    }
    if ((size_t)n > s->bytes_in_buffer) {
        ERREXIT(cinfo, JERR_INPUT_EOF);
    }
    s->next_input_byte += n;
    s->bytes_in_buffer -= (size_t)n;
}
static void src_term(j_decompress_ptr cinfo) { (void)cinfo; }

static int jpeg12_decode(const uint8_t *src, size_t src_len, uint8_t *dst, size_t dst_len,
                        uint32_t width, uint32_t height, int32_t components,
                        int32_t bytes_per_sample, char *msg, size_t msg_len)
{
    if (bytes_per_sample != 2) {
        return fail(msg, msg_len, "12-bit JPEG: samples need 2 bytes");
    }
    struct jpeg_decompress_struct cinfo;
    struct rapha_jpeg_error err;
    struct jpeg_source_mgr source;
    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error;
    err.pub.output_message = on_message;
    err.msg = msg;
    err.msg_len = msg_len;
    if (setjmp(err.back)) {
        jpeg_destroy_decompress(&cinfo);
        return 1;
    }
    jpeg_create_decompress(&cinfo);
    source.next_input_byte = src;
    source.bytes_in_buffer = src_len;
    source.init_source = src_init;
    source.fill_input_buffer = src_fill;
    source.skip_input_data = src_skip;
    source.resync_to_restart = jpeg_resync_to_restart;
    source.term_source = src_term;
    cinfo.src = &source;
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.image_width != width || cinfo.image_height != height ||
        cinfo.num_components != components) {
        snprintf(msg, msg_len,
                 "12-bit JPEG: the stream is %ux%u with %d components, the DICOM header says "
                 "%ux%u with %d",
                 cinfo.image_width, cinfo.image_height, cinfo.num_components, width, height,
                 components);
        jpeg_destroy_decompress(&cinfo);
        return 1;
    }
    /* Stored values, as the reference decoder returns them: no colour conversion. */
    cinfo.out_color_space = cinfo.jpeg_color_space;
    jpeg_start_decompress(&cinfo);
    size_t row_samples = (size_t)width * (size_t)components;
    if (cinfo.output_width != width || cinfo.output_height != height ||
        cinfo.output_components != components || dst_len != row_samples * height * 2) {
        jpeg_destroy_decompress(&cinfo);
        return fail(msg, msg_len, "12-bit JPEG: output does not match the image");
    }
    JSAMPARRAY row = (*cinfo.mem->alloc_sarray)((j_common_ptr)&cinfo, JPOOL_IMAGE,
                                                (JDIMENSION)row_samples, 1);
    while (cinfo.output_scanline < cinfo.output_height) {
        size_t y = cinfo.output_scanline;
        if (jpeg_read_scanlines(&cinfo, row, 1) != 1) {
            jpeg_destroy_decompress(&cinfo);
            return fail(msg, msg_len, "12-bit JPEG: a scanline could not be read");
        }
        uint8_t *out = dst + y * row_samples * 2;
        for (size_t i = 0; i < row_samples; i++) {
            uint16_t v = (uint16_t)row[0][i];
            out[2 * i] = (uint8_t)(v & 0xFF);
            out[2 * i + 1] = (uint8_t)(v >> 8);
        }
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

/* The one entry point: codec 1 is JPEG-LS, 2 is 12-bit JPEG (the worker's `Codec` codes). */
int rapha_decode_frame(int32_t codec, const uint8_t *src, size_t src_len, uint8_t *dst,
                       size_t dst_len, uint32_t width, uint32_t height, int32_t components,
                       int32_t bytes_per_sample, char *msg, size_t msg_len)
{
    switch (codec) {
    case 1:
        return jpegls_decode(src, src_len, dst, dst_len, width, height, components,
                             bytes_per_sample, msg, msg_len);
    case 2:
        return jpeg12_decode(src, src_len, dst, dst_len, width, height, components,
                             bytes_per_sample, msg, msg_len);
    default:
        return fail(msg, msg_len, "no such codec");
    }
}
