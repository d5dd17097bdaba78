"""Per-layer constant tables of the int8 qconv entry (C++ source, included by x86_int8_source).

Each qconv call used to rebuild three small tables in the kernels' scratch: ``shifted_off``
(off - comp per channel), ``fold_off``'s add + off·mult per channel, and conv_direct4's ``qoff``
(the panel offset of every channel quad and tap). The caller wrote them every call, so at 2
threads the pool's worker read lines freshly modified in the caller's cache (s17 H-A's bisection:
copying them privately took the worker's band tiles from ~7.5 to ~6.3 us on ResNet-20's
16->16@32).

``layer_tables`` keeps them per layer instead: a bounded table (256 slots, open addressing on
the packed weights pointer and the call's geometry and quantization settings), each slot filled
once from the same functions as before and then only read (published by a compare-exchange,
looked up lock-free). A hit is checked against copies of the inputs it was built
from (off, comp, and mult / add where the fold applies), so a buffer reused for other weights or
quant params only misses: outputs are bit-identical to the per-call tables. Full table: the
per-call path as before (counted). Entries live as long as the library (a few KB a layer).

Knob ``edgecc_x86_int8_layer_tables`` (int64): 1 (default) conv_direct4 calls (the pooled
convolutions, whose worker reads the tables; the rest mostly run serially, where a hit's check
of the inputs costs about what it saves: MobileNetV2-32 1-thread CPU time 0.990x with every
call, Zen 4), 2 every VNNI qconv call, 0 per-call tables (A/B). Counters
(int64 library symbols, for tests): ``edgecc_x86_int8_layer_tables_calls`` (qconv calls that took
their tables from a slot), ``_fills`` (slots filled), ``_full`` (calls refused a slot: table full).
"""

LAYER_TABLES_SYMBOLS = ("edgecc_x86_int8_layer_tables", "edgecc_x86_int8_layer_tables_calls",
                        "edgecc_x86_int8_layer_tables_fills", "edgecc_x86_int8_layer_tables_full")

LAYER_TABLES_KERNELS = r"""
// ---- layer_tables (x86_int8_layer_tables_source) ----
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_layer_tables = 1;
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_layer_tables_calls = 0;
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_layer_tables_fills = 0;
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_layer_tables_full = 0;

constexpr int LT_KEY = 20, LT_SLOTS = 256;
struct LayerTables {
  int64_t key[LT_KEY];
  int64_t n, nq; bool fold_tried;
  const int32_t* off_in; const int32_t* comp_in;  // copies of the inputs (checked on a hit)
  const int64_t* mult_in; const int64_t* add_in;  // (only where the fold was tried)
  const int32_t* shifted; const int64_t* fadd;     // shifted_off's table, fold_off's (or null)
  const int64_t* qoff;                             // conv_direct4's (nq quads), or null
};
static std::atomic<LayerTables*> lt_slots[LT_SLOTS];

static inline int64_t lt_round(int64_t bytes) { return (bytes + 63) / 64 * 64; }

static bool lt_matches(const LayerTables* t, const int64_t* key, const Epilogue& e,
                       const int32_t* comp) {
  if (memcmp(t->key, key, sizeof(t->key)) != 0) return false;
  const int64_t n = t->n;
  if (memcmp(t->off_in, e.off, n * 4) || memcmp(t->comp_in, comp, n * 4)) return false;
  return !t->fold_tried ||
         (!memcmp(t->mult_in, e.mult, n * 8) && !memcmp(t->add_in, e.add, n * 8));
}

// a slot built by the per-call functions (shifted_off, fold_off, direct4_offsets), on its own
// cache lines (nothing else is written there afterwards)
static LayerTables* lt_fill(const int64_t* key, const Epilogue& e, const int32_t* comp,
                            int64_t n, int64_t kmax, int64_t per_channel, int64_t nq,
                            const int64_t* geo) {
  const bool fold_tried = e.wide && e.hi32 && e.requant && kmax > 0 && kmax <= (1 << 16) &&
                          per_channel >= edgecc_x86_int8_fold_min;
  const int64_t b4 = lt_round(n * 4), b8 = lt_round(n * 8);
  const int64_t bytes = lt_round(sizeof(LayerTables)) + 3 * b4 + (fold_tried ? 3 * b8 : 0) +
                        lt_round(nq * 8);
  char* mem = static_cast<char*>(aligned_alloc(64, bytes));
  if (!mem) return nullptr;
  LayerTables* t = reinterpret_cast<LayerTables*>(mem);
  char* at = mem + lt_round(sizeof(LayerTables));
  auto take = [&](int64_t b) { char* p = at; at += b; return p; };
  memcpy(t->key, key, sizeof(t->key));
  t->n = n; t->nq = nq; t->fold_tried = fold_tried;
  int32_t* off_in = reinterpret_cast<int32_t*>(take(b4)); memcpy(off_in, e.off, n * 4);
  int32_t* comp_in = reinterpret_cast<int32_t*>(take(b4)); memcpy(comp_in, comp, n * 4);
  int32_t* shifted = reinterpret_cast<int32_t*>(take(b4));
  memcpy(shifted, shifted_off(e.off, comp, n), n * 4);
  t->off_in = off_in; t->comp_in = comp_in; t->shifted = shifted;
  t->mult_in = t->add_in = t->fadd = nullptr;
  if (fold_tried) {
    int64_t* mult_in = reinterpret_cast<int64_t*>(take(b8)); memcpy(mult_in, e.mult, n * 8);
    int64_t* add_in = reinterpret_cast<int64_t*>(take(b8)); memcpy(add_in, e.add, n * 8);
    t->mult_in = mult_in; t->add_in = add_in;
    Epilogue f = e;
    f.off = shifted;
    fold_off(f, n, kmax, per_channel);  // (counts fold_calls for this call)
    if (f.fadd) {
      int64_t* fadd = reinterpret_cast<int64_t*>(take(b8));
      memcpy(fadd, f.fadd, n * 8);
      t->fadd = fadd;
    }
  }
  t->qoff = nullptr;
  if (nq) {
    int64_t* qoff = reinterpret_cast<int64_t*>(take(lt_round(nq * 8)));
    direct4_offsets(qoff, geo[0], geo[1], geo[2], geo[3], geo[4], geo[5], geo[6]);
    t->qoff = qoff;
  }
  return t;
}

// the layer's tables (sets e.off / e.fadd to them), or null: the caller builds them per call
// (knob 0, or 1 and not conv_direct4 (nq 0), table full). geo: conv_direct4's (cdot, kh, kw, hp, wp, sw, wq) when nq > 0.
static const LayerTables* layer_tables(Epilogue& e, const int8_t* packed, const int32_t* comp,
                                       int64_t n, int64_t kmax, int64_t per_channel,
                                       int64_t nq, const int64_t* geo) {
  if (!edgecc_x86_int8_layer_tables || (edgecc_x86_int8_layer_tables == 1 && !nq))
    return nullptr;
  int64_t key[LT_KEY] = {(int64_t)packed, (int64_t)comp, (int64_t)e.off, (int64_t)e.mult,
                         (int64_t)e.add, n, kmax, per_channel, edgecc_x86_int8_fold_min,
                         e.wide * 4 + e.hi32 * 2 + e.requant, nq};
  for (int i = 0; i < 7; ++i) key[11 + i] = nq ? geo[i] : 0;
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < LT_KEY; ++i) h = (h ^ (uint64_t)key[i]) * 1099511628211ull;
  const int64_t start = (int64_t)((h >> 24) % LT_SLOTS);
  const LayerTables* t = nullptr;
  bool filled = false;
  for (int64_t p = 0; p < LT_SLOTS; ++p) {
    const LayerTables* s = lt_slots[(start + p) % LT_SLOTS].load(std::memory_order_acquire);
    if (!s) break;
    if (lt_matches(s, key, e, comp)) { t = s; break; }
  }
  if (!t) {  // fill one, publish it in the first free slot (compare-exchange: no lock; a
             // thread that loses a race to the same layer takes the winner's and frees its own)
    LayerTables* mine = nullptr;
    for (int64_t p = 0; p < LT_SLOTS && !t; ++p) {
      std::atomic<LayerTables*>& slot = lt_slots[(start + p) % LT_SLOTS];
      LayerTables* s = slot.load(std::memory_order_acquire);
      if (!s) {
        if (!mine) mine = lt_fill(key, e, comp, n, kmax, per_channel, nq, geo), filled = true;
        if (!mine) break;
        if (slot.compare_exchange_strong(s, mine, std::memory_order_acq_rel,
                                         std::memory_order_acquire)) {
          t = mine, mine = nullptr;
          EDGECC_COUNT(edgecc_x86_int8_layer_tables_fills, 1);
          break;
        }
      }
      if (lt_matches(s, key, e, comp)) t = s;  // (s: the slot's entry, maybe just published)
    }
    free(mine);
    if (!t) {
      EDGECC_COUNT(edgecc_x86_int8_layer_tables_full, 1);
      return nullptr;
    }
  }
  if (!filled && t->fadd)  // (a fill's fold_off counted the call already)
    EDGECC_COUNT(fold_calls, 1);  // as fold_off counts a call
  e.off = t->shifted;
  e.fadd = t->fadd;
  EDGECC_COUNT(edgecc_x86_int8_layer_tables_calls, 1);
  return t;
}
"""
