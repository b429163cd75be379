/*
 * HTJ2K (JPEG 2000 Part 15) through OpenJPH, behind the same narrow call as the C decoders in
 * codecs.c: a bare codestream in, the samples of the image the caller expects out
 * (interleaved, little endian, `bytes_per_sample` bytes each, two's complement for a signed
 * component), or a non-zero return with a message.
 *
 * OpenJPH reports an error by calling its error handler and then throwing; it prints
 * information and warnings through handlers of its own. Here every handler writes nothing (the
 * worker's stdout carries the samples): the error handler keeps the message and throws, and
 * every exception, of OpenJPH's or of the C++ library's (an allocation refused under the
 * worker's address-space limit), is caught before it could cross into C or Rust.
 *
 * The codestream's main header (SIZ) is read first and must describe exactly the expected
 * image (size, components, no subsampling, precision within the output's bytes) before OpenJPH
 * allocates anything for the image; each decoded line must then be the image's width.
 *
 * Runs only inside the sandboxed worker (no files, no network, capped memory): a bug here is
 * contained there.
 */
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <new>
#include <typeinfo>

#include <cxxabi.h>

#include <openjph/ojph_arch.h>
#include <openjph/ojph_codestream.h>
#include <openjph/ojph_file.h>
#include <openjph/ojph_mem.h>
#include <openjph/ojph_message.h>
#include <openjph/ojph_params.h>

namespace {

/* The last error OpenJPH reported (the worker decodes one frame at a time, on one thread). */
char last_error[200];

/* What the error handler throws: the message is in `last_error`. */
struct refused {};

class keep_error : public ojph::message_error {
public:
    void operator()(int code, const char *file, int line, const char *fmt, ...) override
    {
        (void)file;
        (void)line;
        char text[160];
        va_list args;
        va_start(args, fmt);
        std::vsnprintf(text, sizeof text, fmt, args);
        va_end(args);
        std::snprintf(last_error, sizeof last_error, "%s (OpenJPH error 0x%x)", text,
                      static_cast<unsigned>(code));
        throw refused{};
    }
};

class quiet_info : public ojph::message_info {
public:
    void operator()(int, const char *, int, const char *, ...) override {}
};

class quiet_warning : public ojph::message_warning {
public:
    void operator()(int, const char *, int, const char *, ...) override {}
};

keep_error on_error;
quiet_info on_info;
quiet_warning on_warning;

int fail(char *msg, std::size_t msg_len, const char *what)
{
    if (msg_len > 0) {
        std::snprintf(msg, msg_len, "HTJ2K: %s", what);
    }
    return 1;
}

/* Clamps a decoded value to its component's range (lossy frames can overshoot it by a
 * rounding; a lossless one never does) and writes it as `bytes` little-endian bytes. */
void put(std::uint8_t *at, std::int32_t v, std::int32_t lo, std::int32_t hi, int bytes)
{
    v = v < lo ? lo : (v > hi ? hi : v);
    std::uint32_t u = static_cast<std::uint32_t>(v);
    at[0] = static_cast<std::uint8_t>(u & 0xFF);
    if (bytes == 2) {
        at[1] = static_cast<std::uint8_t>((u >> 8) & 0xFF);
    }
}

int decode(const std::uint8_t *src, std::size_t src_len, std::uint8_t *dst, std::size_t dst_len,
           std::uint32_t width, std::uint32_t height, std::int32_t components,
           std::int32_t bytes_per_sample, std::uint64_t max_tiles, char *msg, std::size_t msg_len)
{
    if (components < 1 || components > 3 || (bytes_per_sample != 1 && bytes_per_sample != 2)) {
        return fail(msg, msg_len, "unsupported layout");
    }
    std::size_t pixel_bytes = static_cast<std::size_t>(components) * bytes_per_sample;
    if (static_cast<std::size_t>(width) * height * pixel_bytes != dst_len) {
        return fail(msg, msg_len, "output buffer does not match the image");
    }
    ojph::mem_infile file;
    file.open(src, src_len);
    ojph::codestream cs;
    cs.read_headers(&file);
    ojph::param_siz siz = cs.access_siz();
    ojph::point extent = siz.get_image_extent();
    ojph::point offset = siz.get_image_offset();
    ojph::size tile = siz.get_tile_size();
    ojph::point tile_offset = siz.get_tile_offset();
    if (extent.x <= offset.x || extent.y <= offset.y || tile.w == 0 || tile.h == 0 ||
        tile_offset.x > offset.x || tile_offset.y > offset.y) {
        return fail(msg, msg_len, "image or tile geometry is empty or inconsistent");
    }
    std::uint32_t w = extent.x - offset.x;
    std::uint32_t h = extent.y - offset.y;
    std::uint32_t n = siz.get_num_components();
    if (w != width || h != height || n != static_cast<std::uint32_t>(components)) {
        std::snprintf(msg, msg_len,
                      "HTJ2K: the stream is %ux%u with %u components, the DICOM header says "
                      "%ux%u with %d",
                      w, h, n, width, height, components);
        return 1;
    }
    std::uint64_t tiles = ((static_cast<std::uint64_t>(extent.x) - tile_offset.x + tile.w - 1) /
                           tile.w) *
                          ((static_cast<std::uint64_t>(extent.y) - tile_offset.y + tile.h - 1) /
                           tile.h);
    if (tiles > max_tiles) {
        return fail(msg, msg_len, "more tiles than accepted");
    }
    std::int32_t lo[3];
    std::int32_t hi[3];
    for (std::uint32_t c = 0; c < n; c++) {
        ojph::point sub = siz.get_downsampling(c);
        std::uint32_t bits = siz.get_bit_depth(c);
        if (sub.x != 1 || sub.y != 1) {
            return fail(msg, msg_len, "subsampled components");
        }
        if (bits < 1 || bits > 8u * static_cast<std::uint32_t>(bytes_per_sample)) {
            std::snprintf(msg, msg_len, "HTJ2K: %u-bit samples do not fit %d bytes", bits,
                          bytes_per_sample);
            return 1;
        }
        if (siz.get_recon_width(c) != width || siz.get_recon_height(c) != height) {
            return fail(msg, msg_len, "a component is not the image's size");
        }
        if (siz.is_signed(c)) {
            lo[c] = -(1 << (bits - 1));
            hi[c] = (1 << (bits - 1)) - 1;
        } else {
            lo[c] = 0;
            hi[c] = static_cast<std::int32_t>((1u << bits) - 1);
        }
    }
    cs.create();
    bool planar = cs.is_planar();
    /* Interleaved codestreams give line 0 of every component, then line 1...; planar ones every
     * line of component 0, then of component 1... */
    std::uint32_t outer = planar ? n : height;
    std::uint32_t inner = planar ? height : n;
    for (std::uint32_t a = 0; a < outer; a++) {
        for (std::uint32_t b = 0; b < inner; b++) {
            std::uint32_t want = planar ? a : b;
            std::uint32_t y = planar ? b : a;
            std::uint32_t comp = 0;
            ojph::line_buf *line = cs.pull(comp);
            if (line == nullptr || comp != want || line->size < width || line->i32 == nullptr) {
                cs.close();
                return fail(msg, msg_len, "the decoder's lines do not match the image");
            }
            std::uint8_t *row = dst + static_cast<std::size_t>(y) * width * pixel_bytes +
                                static_cast<std::size_t>(want) * bytes_per_sample;
            const std::int32_t *sp = line->i32;
            for (std::uint32_t x = 0; x < width; x++) {
                put(row + static_cast<std::size_t>(x) * pixel_bytes, sp[x], lo[want], hi[want],
                    bytes_per_sample);
            }
        }
    }
    cs.close();
    return 0;
}

} // namespace

/* Decodes one HTJ2K codestream; 0 on success, else 1 with a message in `msg`. Never throws. */
extern "C" int rapha_decode_htj2k(const std::uint8_t *src, std::size_t src_len, std::uint8_t *dst,
                                  std::size_t dst_len, std::uint32_t width, std::uint32_t height,
                                  std::int32_t components, std::int32_t bytes_per_sample,
                                  std::uint64_t max_tiles, char *msg, std::size_t msg_len)
{
    ojph::configure_error(&on_error);
    ojph::configure_warning(&on_warning);
    ojph::configure_info(&on_info);
    last_error[0] = '\0';
    try {
        return decode(src, src_len, dst, dst_len, width, height, components, bytes_per_sample,
                      max_tiles, msg, msg_len);
    } catch (const refused &) {
        return fail(msg, msg_len, last_error);
    } catch (const std::bad_alloc &) {
        return fail(msg, msg_len, "out of memory");
    } catch (const std::exception &e) {
        return fail(msg, msg_len, e.what());
    } catch (const char *text) {
        return fail(msg, msg_len, text != nullptr ? text : "the decoder failed");
    } catch (...) {
        const std::type_info *t = abi::__cxa_current_exception_type();
        if (msg_len > 0) {
            std::snprintf(msg, msg_len, "HTJ2K: the decoder failed (%s)", t ? t->name() : "?");
        }
        return 1;
    }
}
