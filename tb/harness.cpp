// Cycle-exact Verilator trace harness for the DIMC macro (no Python in the loop).
//
// Built by tb/trace.py:  verilator --cc --exe --build --prefix Vtop --top-module <name>
//   -CFLAGS "-DWR_BITS=.. -DREQ_BITS=.. -DRES_BITS=.." [--trace -CFLAGS -DWAVES] macro.v harness.cpp
//
// usage:  harness STIM_FILE TRACE_OUT [--vcd FILE] [--max-cycles N]
//         harness --dump-ready SEED THRESHOLD N      (prints ready_at for cycles 0..N-1, one char each)
//
// Stimulus file (text, written by tb/trace.py:write_stim):
//   cimphony-stim 1
//   widths WR_BITS REQ_BITS RES_BITS
//   counts N_WR N_REQ
//   ready SEED THRESHOLD
//   tail TAIL
//   wr GAP AFTER HEX        (N_WR lines, in order)
//   req GAP AFTER HEX       (N_REQ lines, in order)
//
// Trace file (text):
//   cimphony-trace 1
//   <cycle> wr 0 | <cycle> req 0 | <cycle> res HEX | <cycle> err CODE      (cycle order)
//   end TOTAL_CYCLES STATUS            STATUS = ok | timeout
//
// Port names: Verilator escapes "__" in port names as "___05F" (wr__valid -> wr___05Fvalid).
// Driver rules: exactly those of model/stimulus.py (Source, ready_at).
// Reset: rst=1 with all stream inputs 0 for RESET_CYCLES clock edges, then rst=0; cycle 0 is the
// first cycle after reset is released (the DUT is in its reset state in cycle 0, as the model).
// Each cycle c: drive inputs of cycle c with clk=0, eval, sample outputs (combinational outputs
// see cycle c's inputs; handshakes are valid&ready in cycle c), then clk=1, eval (edge ending c).
// The run ends TAIL cycles after the cycle in which the last of (all wr sent, all req sent,
// n_req results received) became true; TOTAL_CYCLES = that cycle + TAIL + 1.

#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>
#include <type_traits>

#include "Vtop.h"
#include "verilated.h"
#ifdef WAVES
#include "verilated_vcd_c.h"
#endif

#ifndef WR_BITS
#error "define WR_BITS, REQ_BITS, RES_BITS"
#endif

static const int RESET_CYCLES = 2;

static inline int words_of(int bits) { return (bits + 31) / 32; }
static const int WR_W = words_of(WR_BITS), REQ_W = words_of(REQ_BITS), RES_W = words_of(RES_BITS);

// ---- ready_at: identical to model.stimulus.ready_at -------------------------------------
static inline uint32_t fmix32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}
static inline int ready_at(uint32_t seed, uint64_t cycle, uint32_t threshold) {
    if (threshold >= 65536u) return 1;
    uint32_t h = fmix32((uint32_t)(cycle * 0x9E3779B9ull) + seed);
    return (h >> 16) < threshold;
}

// ---- generic port access (CData/SData/IData/QData for <= 64 bits, VlWide<N> above) --------
template <typename T>
static inline typename std::enable_if<std::is_integral<T>::value>::type
set_port(T& port, const uint32_t* w, int nw) {
    uint64_t v = w[0];
    if (nw > 1) v |= (uint64_t)w[1] << 32;
    port = (T)v;
}
template <std::size_t N>
static inline void set_port(VlWide<N>& port, const uint32_t* w, int nw) {
    for (std::size_t i = 0; i < N; ++i) port.data()[i] = (i < (std::size_t)nw) ? w[i] : 0;
}
template <typename T>
static inline typename std::enable_if<std::is_integral<T>::value>::type
get_port(const T& port, uint32_t* w, int nw) {
    uint64_t v = (uint64_t)port;
    w[0] = (uint32_t)v;
    if (nw > 1) w[1] = (uint32_t)(v >> 32);
}
template <std::size_t N>
static inline void get_port(const VlWide<N>& port, uint32_t* w, int nw) {
    for (int i = 0; i < nw; ++i) w[i] = port.data()[i];
}
template <typename T> static inline void clear_port(T& port) { port = 0; }
template <std::size_t N> static inline void clear_port(VlWide<N>& port) {
    for (std::size_t i = 0; i < N; ++i) port.data()[i] = 0;
}

// ---- stimulus -----------------------------------------------------------------------------
struct Beats {
    int nw = 0;
    std::vector<uint64_t> gap, after;
    std::vector<uint32_t> words;  // beat i at words[i*nw .. i*nw+nw-1]
    size_t size() const { return gap.size(); }
    const uint32_t* payload(size_t i) const { return &words[i * nw]; }
};

[[noreturn]] static void die(const char* fmt, const char* a = "", long b = 0) {
    std::fprintf(stderr, "harness: ");
    std::fprintf(stderr, fmt, a, b);
    std::fprintf(stderr, "\n");
    std::exit(2);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// parse hex string s into nw little-endian 32-bit words; die if it exceeds `bits`
static void parse_hex(const char* s, size_t len, uint32_t* w, int nw, int bits) {
    std::memset(w, 0, nw * sizeof(uint32_t));
    size_t nib = 0;
    for (size_t k = len; k-- > 0; ++nib) {
        int v = hexval(s[k]);
        if (v < 0) die("bad hex digit in payload '%s'", s);
        if (!v) continue;
        size_t bit = nib * 4;
        if (bit + (v >= 8 ? 4 : v >= 4 ? 3 : v >= 2 ? 2 : 1) > (size_t)bits)
            die("payload '%s' wider than its port (%ld bits)", s, bits);
        w[bit / 32] |= (uint32_t)v << (bit % 32);
    }
}

static void format_hex(const uint32_t* w, int nw, std::string& out) {
    static const char* dig = "0123456789abcdef";
    out.clear();
    bool started = false;
    for (int i = nw - 1; i >= 0; --i)
        for (int s = 28; s >= 0; s -= 4) {
            int v = (w[i] >> s) & 15;
            if (v || started) { out.push_back(dig[v]); started = true; }
        }
    if (!started) out.push_back('0');
}

struct Stim {
    uint32_t seed = 0, threshold = 65536;
    int tail = 2;
    Beats wr, req;
};

static Stim read_stim(const char* path) {
    FILE* f = std::fopen(path, "r");
    if (!f) die("cannot open stimulus file %s", path);
    Stim st;
    st.wr.nw = WR_W;
    st.req.nw = REQ_W;
    char* line = nullptr;
    size_t cap = 0;
    ssize_t n;
    long nwr = -1, nreq = -1;
    bool magic = false;
    while ((n = getline(&line, &cap, f)) > 0) {
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (!n || line[0] == '#') continue;
        char kw[16];
        int off = 0;
        if (std::sscanf(line, "%15s%n", kw, &off) != 1) continue;
        if (!magic) {
            if (std::strcmp(kw, "cimphony-stim")) die("%s is not a cimphony-stim file", path);
            magic = true;
        } else if (!std::strcmp(kw, "widths")) {
            long a, b, c;
            if (std::sscanf(line + off, "%ld %ld %ld", &a, &b, &c) != 3) die("bad widths line%s");
            if (a != WR_BITS || b != REQ_BITS || c != RES_BITS)
                die("stimulus widths do not match this harness build (wr %s%ld)", "", a);
        } else if (!std::strcmp(kw, "counts")) {
            if (std::sscanf(line + off, "%ld %ld", &nwr, &nreq) != 2) die("bad counts line%s");
            st.wr.gap.reserve(nwr); st.wr.after.reserve(nwr); st.wr.words.reserve(nwr * WR_W);
            st.req.gap.reserve(nreq); st.req.after.reserve(nreq); st.req.words.reserve(nreq * REQ_W);
        } else if (!std::strcmp(kw, "ready")) {
            unsigned long s, t;
            if (std::sscanf(line + off, "%lu %lu", &s, &t) != 2) die("bad ready line%s");
            st.seed = (uint32_t)s;
            st.threshold = (uint32_t)t;
        } else if (!std::strcmp(kw, "tail")) {
            if (std::sscanf(line + off, "%d", &st.tail) != 1) die("bad tail line%s");
        } else if (!std::strcmp(kw, "wr") || !std::strcmp(kw, "req")) {
            bool is_wr = kw[0] == 'w';
            Beats& b = is_wr ? st.wr : st.req;
            unsigned long long gap, after;
            int o2 = 0;
            if (std::sscanf(line + off, "%llu %llu %n", &gap, &after, &o2) != 2) die("bad beat line: %s", line);
            const char* h = line + off + o2;
            size_t hl = std::strlen(h);
            while (hl && h[hl - 1] == ' ') --hl;
            b.gap.push_back(gap);
            b.after.push_back(after);
            b.words.resize(b.words.size() + b.nw);
            parse_hex(h, hl, &b.words[b.words.size() - b.nw], b.nw, is_wr ? WR_BITS : REQ_BITS);
        } else {
            die("unknown stimulus keyword '%s'", kw);
        }
    }
    std::free(line);
    std::fclose(f);
    if (!magic) die("empty stimulus file %s", path);
    if ((long)st.wr.size() != nwr || (long)st.req.size() != nreq) die("beat counts do not match header%s");
    return st;
}

int main(int argc, char** argv) {
    if (argc >= 2 && !std::strcmp(argv[1], "--dump-ready")) {
        if (argc != 5) die("usage: --dump-ready SEED THRESHOLD N%s");
        uint32_t seed = (uint32_t)std::strtoul(argv[2], nullptr, 0);
        uint32_t thr = (uint32_t)std::strtoul(argv[3], nullptr, 0);
        uint64_t n = std::strtoull(argv[4], nullptr, 0);
        std::string s(n, '0');
        for (uint64_t c = 0; c < n; ++c) s[c] = ready_at(seed, c, thr) ? '1' : '0';
        std::printf("%s\n", s.c_str());
        return 0;
    }
    if (argc < 3) die("usage: harness STIM TRACE_OUT [--vcd FILE] [--max-cycles N]%s");
    const char* stim_path = argv[1];
    const char* out_path = argv[2];
    const char* vcd_path = nullptr;
    uint64_t max_cycles = 0;  // 0: derived from the stimulus
    for (int i = 3; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--vcd") && i + 1 < argc) vcd_path = argv[++i];
        else if (!std::strcmp(argv[i], "--max-cycles") && i + 1 < argc) max_cycles = std::strtoull(argv[++i], nullptr, 0);
        else die("unknown argument %s", argv[i]);
    }
    auto t_load0 = std::chrono::steady_clock::now();
    Stim st = read_stim(stim_path);
    auto t_load1 = std::chrono::steady_clock::now();
    if (!max_cycles) {
        // generous bound: every gap, plus a lot of slack per beat for compute latency and res stalls
        uint64_t g = 0;
        for (auto x : st.wr.gap) g += x;
        for (auto x : st.req.gap) g += x;
        double p = st.threshold >= 65536 ? 1.0 : (st.threshold ? st.threshold / 65536.0 : 1e-4);
        max_cycles = g + (uint64_t)((st.wr.size() + st.req.size() * 64) / p) + 100000;
    }

    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(1, argv);
    auto top = std::make_unique<Vtop>(ctx.get(), "top");
#ifdef WAVES
    std::unique_ptr<VerilatedVcdC> vcd;
    if (vcd_path) {
        ctx->traceEverOn(true);
        vcd = std::make_unique<VerilatedVcdC>();
        top->trace(vcd.get(), 99);
        vcd->open(vcd_path);
    }
#define DUMP(t) do { if (vcd) vcd->dump(t); } while (0)
#else
    if (vcd_path) die("--vcd needs a harness built with WAVES=1 (waves=True)%s");
#define DUMP(t) do { } while (0)
#endif
    uint64_t simtime = 0;

    // reset: RESET_CYCLES edges with rst=1, all inputs 0
    top->clk = 0;
    top->rst = 1;
    top->wr___05Fvalid = 0;
    top->req___05Fvalid = 0;
    top->res___05Fready = 0;
    clear_port(top->wr___05Fpayload);
    clear_port(top->req___05Fpayload);
    for (int i = 0; i < RESET_CYCLES; ++i) {
        top->clk = 0; top->eval(); DUMP(simtime); simtime += 5;
        top->clk = 1; top->eval(); DUMP(simtime); simtime += 5;
    }
    top->rst = 0;

    FILE* out = std::fopen(out_path, "w");
    if (!out) die("cannot open trace output %s", out_path);
    std::vector<char> obuf(1 << 20);
    std::setvbuf(out, obuf.data(), _IOFBF, obuf.size());
    std::fprintf(out, "cimphony-trace 1\n");

    const size_t nwr = st.wr.size(), nreq = st.req.size();
    size_t wi = 0, ri = 0;                    // next beat index per source
    uint64_t wr_free = 0, req_free = 0;       // t_free per source
    uint64_t n_wr = 0, n_req = 0, n_res = 0;  // transfers so far (cycles < c at decision time)
    size_t wr_driven = (size_t)-1, req_driven = (size_t)-1;
    std::vector<uint32_t> resw(RES_W);
    std::string hex;
    bool done = false, timeout = false;
    uint64_t end_cycle = 0, c = 0;

    auto t0 = std::chrono::steady_clock::now();
    for (c = 0;; ++c) {
        // valid decisions from t_free+gap and the other stream's transfers before this cycle
        int wv = 0, rv = 0;
        if (wi < nwr && c >= wr_free + st.wr.gap[wi] && n_res >= st.wr.after[wi]) {
            wv = 1;
            if (wr_driven != wi) { set_port(top->wr___05Fpayload, st.wr.payload(wi), WR_W); wr_driven = wi; }
        }
        if (ri < nreq && c >= req_free + st.req.gap[ri] && n_wr >= st.req.after[ri]) {
            rv = 1;
            if (req_driven != ri) { set_port(top->req___05Fpayload, st.req.payload(ri), REQ_W); req_driven = ri; }
        }
        const int rr = ready_at(st.seed, c, st.threshold);
        top->wr___05Fvalid = wv;
        top->req___05Fvalid = rv;
        top->res___05Fready = rr;
        top->clk = 0;
        top->eval();
        DUMP(simtime); simtime += 5;

        // sample this cycle's outputs
        if (wv && top->wr___05Fready) {
            std::fprintf(out, "%" PRIu64 " wr 0\n", c);
            ++wi; wr_free = c + 1; ++n_wr;
        }
        if (rv && top->req___05Fready) {
            std::fprintf(out, "%" PRIu64 " req 0\n", c);
            ++ri; req_free = c + 1; ++n_req;
        }
        if (rr && top->res___05Fvalid) {
            get_port(top->res___05Fpayload, resw.data(), RES_W);
            format_hex(resw.data(), RES_W, hex);
            std::fprintf(out, "%" PRIu64 " res %s\n", c, hex.c_str());
            ++n_res;
        }
        if (top->err) std::fprintf(out, "%" PRIu64 " err %d\n", c, (int)top->err);

        if (!done && wi == nwr && ri == nreq && n_res >= nreq) {
            done = true;
            end_cycle = c + st.tail;
        }
        if (done && c >= end_cycle) break;
        if (c + 1 >= max_cycles) { timeout = true; break; }

        top->clk = 1;
        top->eval();
        DUMP(simtime); simtime += 5;
    }
    auto t1 = std::chrono::steady_clock::now();
    const uint64_t total = c + 1;
    std::fprintf(out, "end %" PRIu64 " %s\n", total, timeout ? "timeout" : "ok");
    std::fclose(out);
    top->final();
#ifdef WAVES
    if (vcd) vcd->close();
#endif
    double wall = std::chrono::duration<double>(t1 - t0).count();
    double load = std::chrono::duration<double>(t_load1 - t_load0).count();
    std::fprintf(stderr, "harness: cycles %" PRIu64 " wall_s %.6f cycles_per_s %.0f load_s %.6f status %s\n",
                 total, wall, wall > 0 ? total / wall : 0.0, load, timeout ? "timeout" : "ok");
    return timeout ? 3 : 0;
}
