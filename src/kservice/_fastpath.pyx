# cython: language_level=3
"""The packet engine's inner loop, compiled: the twin of ``_fastpath_py.py``.

Same API, same program, same PRNG and the same results as the pure twin (read
that file first: it is the specification, this is it with C types). The
program is copied once into flat C arrays; set and verdict-map lookups are
open-addressing hash probes; the chain walk, matches and verdicts run without
touching Python objects. Kernel state that only affinity, connection tracking
and IPVS use (``kservice.engine._state.State``) stays in Python and is called
from here, so both twins share it.

Directives (bounds checks, wraparound, cdivision) are set in setup.py, in one
place, with ``KSERVICE_CYTHON_DEBUG=1`` turning the checks back on.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memset
from cpython.ref cimport PyObject


cdef extern from *:
    void __builtin_prefetch(const void *addr) nogil


cdef extern from *:
    """
    #include <stdlib.h>
    #include <string.h>
    #if defined(__linux__)
    #include <sys/mman.h>
    #endif
    /* Zeroed memory for the big lookup tables (the flow cache and its tree
       nodes), freed with ks_table_free. 128-byte aligned: an IPv4 flow slot
       is a pair of cache lines that the hardware fetches together. From
       2 MiB up, a fresh anonymous mapping of whole 2 MiB
       pages, 2 MiB aligned and marked for transparent huge pages before
       anything touches it, so that a lookup into a table of tens of megabytes
       does not also miss the TLB. (posix_memalign is not enough: once glibc
       has freed a large block it serves the next ones from the heap, whose
       pages are already faulted in as 4 KiB pages, and madvise comes too late
       for them.) The 64 bytes before the table hold its mapping's length
       (0: from malloc). */
    #define KS_HUGE ((size_t)2 << 20)
    static void *ks_table_alloc(size_t bytes) {
        char *p;
        if (bytes == 0) bytes = 64;
        bytes = (bytes + 63) & ~(size_t)63;
    #if defined(__linux__) && defined(MADV_HUGEPAGE)
        if (bytes >= KS_HUGE) {
            size_t body = (bytes + KS_HUGE - 1) & ~(KS_HUGE - 1);
            size_t len = body + 2 * KS_HUGE;
            char *raw = (char *)mmap(NULL, len, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            char *q, *keep;
            if (raw == (char *)MAP_FAILED) return NULL;
            q = (char *)(((size_t)raw + 64 + KS_HUGE - 1) & ~(KS_HUGE - 1));
            keep = q - 4096;  /* the page holding the header */
            if (keep > raw) munmap(raw, (size_t)(keep - raw));
            if (raw + len > q + body) munmap(q + body, (size_t)(raw + len - (q + body)));
            madvise(q, body, MADV_HUGEPAGE);
            ((size_t *)(q - 64))[0] = body + 4096;
            return q;  /* fresh anonymous pages read as zero */
        }
    #endif
    #if defined(_WIN32)
        p = (char *)calloc(1, bytes + 128);  /* alignment is only a speed matter */
        if (p == NULL) return NULL;
    #else
        if (posix_memalign((void **)&p, 128, bytes + 128) != 0) return NULL;
        memset(p, 0, bytes + 128);
    #endif
        return p + 128;
    }
    static void ks_table_free(void *table) {
        char *q = (char *)table;
        size_t len;
        if (q == NULL) return;
        len = ((size_t *)(q - 64))[0];
    #if defined(__linux__) && defined(MADV_HUGEPAGE)
        if (len != 0) {
            munmap(q - 4096, len);
            return;
        }
    #endif
        free(q - 128);
    }
    """
    void *ks_table_alloc(size_t bytes) nogil
    void ks_table_free(void *table) nogil

from array import array

from kservice.engine.packet import KINDS, EngineError, Verdict


# Constants of kservice.engine.compile (opcodes, hooks, conntrack bits) and of the
# pure twin (chain results R_*, verdict kinds K_*); tests check they agree.
cdef enum:
    MAX_DEPTH = 64
    MAX_DRAWS = 64
    N_UNKNOWN = 0
    N_LEAF = 1
    N_STAT = 2
    N_NUMGEN = 3
    FLOW_CACHE_MAX = 1048576
    FC_USED = 0x80000000  # in FlowSlot.meta: the slot holds a flow
    L4_KEPT = 0x80  # in Leaf4.res: the copy is filled
    L4_MAX = 11  # IPv4 slots are 128 bytes: key and root in 40, then eleven Leaf4
    AHEAD_SLOT = 16  # lookup_batch: prefetch a packet's flow slot this many packets ahead,
    AHEAD_FIND = 8   # ... and find it, and prefetch its leaf, this many (< 32: the ring)
    M_SADDR = 1
    M_DADDR = 2
    M_PROTO = 3
    M_SPORT = 4
    M_DPORT = 5
    M_IIF = 6
    M_OIF = 7
    M_MARK = 8
    M_ADDRTYPE = 9
    M_CTSTATE = 10
    M_STAT = 11
    M_RECENT = 12
    M_SET = 13
    M_IPVS = 14
    S_MARK = 20
    S_SETUPD = 21
    S_NOP = 22
    V_NONE = 30
    V_ACCEPT = 31
    V_DROP = 32
    V_REJECT = 33
    V_RETURN = 34
    V_JUMP = 35
    V_GOTO = 36
    V_DNAT = 37
    V_SNAT = 38
    V_MASQ = 39
    V_VMAP = 40
    V_NUMGEN = 41
    M_SADDR4 = 15
    M_DADDR4 = 16
    M_SPORT1 = 17
    M_DPORT1 = 18
    M_NEVER = 19
    RULE = 50
    END = 51
    R_ACCEPT = 0
    R_DROP = 1
    R_REJECT = 2
    R_NAT = 3
    K_ACCEPT = 0
    K_DNAT = 1
    K_REJECT = 2
    K_DROP = 3
    CT_NEW = 1
    CT_ESTABLISHED = 2
    CT_DNAT = 64
    H_PREROUTING = 0
    H_INPUT = 1
    H_FORWARD = 2
    H_OUTPUT = 3
    H_POSTROUTING = 4
    IPVS_CHAIN = -1


DEFAULT_POD_INTERFACE = "veth0"
cdef uint64_t M64 = 0xFFFFFFFFFFFFFFFF


# lookup_batch's ring keeps 32 packets ahead: the distances must fit in it
if not 0 < AHEAD_FIND < AHEAD_SLOT or AHEAD_FIND >= 32:
    raise ImportError("kservice._fastpath: need 0 < AHEAD_FIND < AHEAD_SLOT and AHEAD_FIND < 32")


cdef struct Pkt:
    uint64_t s_hi, s_lo, d_hi, d_lo
    int64_t proto, sport, dport
    uint64_t mark
    int64_t ct
    uint64_t iif, oif
    int64_t masq, dnat, rules, vs, server


cdef struct Ctx:
    # Borrowed references, NULL when unused: the hot path never touches a
    # Python object unless it traces (obs), enumerates (oracle, dry mode) or
    # follows a tracked connection (est).
    double now
    PyObject *obs
    PyObject *oracle
    PyObject *est
    # flow-cache recording: the random draws of this packet, replayed first
    bint recording
    bint stateful  # the path read or wrote kernel state: not cacheable
    bint replay_only  # filling the cache: no fresh draws, no state written
    bint needs_draw   # ... and the path wanted one more draw than replayed
    int npos
    int nreplay
    uint32_t draws[MAX_DRAWS]
    uint8_t kinds[MAX_DRAWS]
    uint32_t params[MAX_DRAWS]


cdef struct Node:  # 16 bytes: four to a cache line
    uint8_t type   # N_UNKNOWN, N_LEAF, N_STAT, N_NUMGEN
    uint8_t res    # leaf: R_* of the packet | masquerade << 4
    uint16_t port  # leaf: the destination port after DNAT
    uint32_t value  # leaf: rules evaluated; draw: threshold or modulus
    int32_t link   # leaf: the DNAT address id (-1: none); draw: the first child
    uint32_t addr  # leaf: the destination after DNAT (IPv4; low bits for IPv6)


cdef struct FlowSlot:  # 64 bytes: an IPv6 slot, or the first line of an IPv4 one
    uint64_t iif
    uint32_t meta  # dport | proto << 16 | origin << 24 | FC_USED; 0: free
    int32_t root   # node index; -2 not cacheable
    Node head      # a copy of the root node (a draw's: res = its leaves kept in the slot)
    uint64_t key[4]  # IPv6: s_hi, s_lo, d_hi, d_lo; IPv4: saddr | daddr << 32, then leaves


cdef struct Leaf4:  # 8 bytes: a copy of an IPv4 leaf, kept in its flow's slot
    uint32_t addr
    uint16_t port
    uint8_t res    # R_* | masquerade << 4 | DNAT << 5 | L4_KEPT
    uint8_t rules


cdef struct Slot:
    uint64_t a_hi, a_lo, small, b_hi, b_lo
    uint32_t op, arg  # the element's verdict (V_NONE for plain sets)
    uint32_t used


cdef inline uint64_t _mix(uint64_t a_hi, uint64_t a_lo, uint64_t small, uint64_t b_hi,
                          uint64_t b_lo) noexcept nogil:
    cdef uint64_t h = a_lo * <uint64_t>0x9E3779B97F4A7C15
    h ^= a_hi * <uint64_t>0xC2B2AE3D27D4EB4F
    h ^= (small + <uint64_t>0x165667B19E3779F9) * <uint64_t>0xD6E8FEB86659FD93
    h ^= (b_lo ^ (b_hi << 1)) * <uint64_t>0xFF51AFD7ED558CCD
    h ^= h >> 32
    h *= <uint64_t>0xD6E8FEB86659FD93
    h ^= h >> 29
    return h


cdef uint64_t GOLDEN = 0x9E3779B97F4A7C15


cdef inline uint32_t _splitmix32(uint64_t z) noexcept nogil:
    """The draw made at PRNG state ``z`` (splitmix64's output, upper 32 bits)."""
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
    z ^= z >> 31
    return <uint32_t>(z >> 32)


cdef class Machine:
    """One compiled program plus its PRNG (see ``_fastpath_py.Machine``)."""

    cdef public object p
    cdef public object state
    cdef uint64_t rng
    cdef int family
    # program arrays
    cdef uint32_t *code
    cdef uint32_t *chain_offset
    cdef uint8_t *chain_policy
    cdef uint8_t *chain_nat
    cdef int64_t *hook_start
    cdef int64_t *hook_chains
    cdef uint64_t *cidrs  # net_hi, net_lo, mask_hi, mask_lo
    cdef int64_t *cidr_start
    cdef int64_t *ports  # lo, hi
    cdef int64_t *port_start
    cdef int64_t local_list
    cdef int64_t *set_kind
    cdef int64_t *set_interval
    cdef int64_t *set_off
    cdef uint64_t *set_mask
    cdef Slot *slots
    cdef int64_t *layout_start
    cdef int64_t *layout_fields
    cdef int64_t *layout_shape
    cdef uint64_t *addr_hi
    cdef uint64_t *addr_lo
    cdef uint64_t *vs_hi
    cdef uint64_t *vs_lo
    cdef int64_t *vs_proto
    cdef int64_t *vs_port
    cdef int64_t n_vs
    cdef bint has_ipvs
    cdef public uint64_t node_hi, node_lo
    cdef public bint has_node_address
    cdef bint masquerade_source
    cdef public uint64_t primary_mask, lo_mask, pod_mask
    cdef dict _iface_cache
    cdef dict _verdicts
    cdef list _address_texts
    cdef object _vs_specs
    cdef object _sets
    cdef list _layouts
    cdef int64_t n_slots
    # the flow cache (see _cached_run)
    cdef public bint flow_cache
    cdef FlowSlot *fc_slots
    cdef int fc_shift  # log2 of the slot size: 7 (IPv4), 6 (IPv6)
    cdef int64_t fc_mask
    cdef int64_t fc_used
    cdef int64_t fc_gen  # bumped when the slot table is rebuilt (slot indices move)
    cdef Node *nodes
    cdef int64_t n_nodes
    cdef int64_t cap_nodes

    def __init__(self, program, state, seed, flow_cache=True):
        self.p = program
        self.state = state
        self.rng = <uint64_t>(int(seed) & 0xFFFFFFFFFFFFFFFF)
        self.family = program.family
        self._iface_cache = {}
        self._verdicts = {}
        self._address_texts = program.address_texts
        self._vs_specs = program.virtual_servers
        self._sets = program.sets
        self._layouts = program.layouts
        self._load(program)
        self.flow_cache = bool(flow_cache)
        self.fc_shift = 7 if self.family == 4 else 6
        self._fc_init(4096)
        self.masquerade_source = program.masquerade_source
        self.has_node_address = program.node_address is not None
        if self.has_node_address:
            self.node_hi = <uint64_t>(program.node_address >> 64)
            self.node_lo = <uint64_t>(program.node_address & 0xFFFFFFFFFFFFFFFF)
        self.primary_mask = self.iface_mask(program.primary_interface)
        self.lo_mask = self.iface_mask("lo")
        self.pod_mask = self.iface_mask(DEFAULT_POD_INTERFACE)

    cdef void *_alloc(self, size_t n, size_t size) except NULL:
        cdef void *ptr = calloc(n if n > 0 else 1, size)
        if ptr == NULL:
            raise MemoryError()
        return ptr

    cdef int64_t *_ints(self, values) except NULL:
        cdef Py_ssize_t i, n = len(values)
        cdef int64_t *out = <int64_t *>self._alloc(n, sizeof(int64_t))
        for i in range(n):
            out[i] = values[i]
        return out

    cdef void _load(self, program) except *:
        cdef Py_ssize_t i, j, n, pos, cap, total
        cdef uint64_t h, m
        cdef Slot *s
        cdef uint32_t[:] code_view = array("I", program.code)
        n = len(code_view)
        self.code = <uint32_t *>self._alloc(n, sizeof(uint32_t))
        if n:
            memcpy(self.code, &code_view[0], n * sizeof(uint32_t))
        cdef uint32_t[:] offsets = array("I", program.chain_offset)
        n = len(offsets)
        self.chain_offset = <uint32_t *>self._alloc(n, sizeof(uint32_t))
        if n:
            memcpy(self.chain_offset, &offsets[0], n * sizeof(uint32_t))
        n = len(program.chain_policy)
        self.chain_policy = <uint8_t *>self._alloc(n, 1)
        self.chain_nat = <uint8_t *>self._alloc(n, 1)
        for i in range(n):
            self.chain_policy[i] = program.chain_policy[i]
            self.chain_nat[i] = program.chain_nat[i]
        starts = [0]
        flat = []
        for chains in program.hooks:
            flat.extend(chains)
            starts.append(len(flat))
        self.hook_start = self._ints(starts)
        self.hook_chains = self._ints(flat)
        # CIDR and port lists
        starts = [0]
        total = sum(len(c) for c in program.cidr_lists)
        self.cidrs = <uint64_t *>self._alloc(4 * total, sizeof(uint64_t))
        pos = 0
        for lst in program.cidr_lists:
            for net, mask in lst:
                self.cidrs[4 * pos] = <uint64_t>(net >> 64)
                self.cidrs[4 * pos + 1] = <uint64_t>(net & 0xFFFFFFFFFFFFFFFF)
                self.cidrs[4 * pos + 2] = <uint64_t>(mask >> 64)
                self.cidrs[4 * pos + 3] = <uint64_t>(mask & 0xFFFFFFFFFFFFFFFF)
                pos += 1
            starts.append(pos)
        self.cidr_start = self._ints(starts)
        self.local_list = program.local_list
        starts = [0]
        flat = []
        for lst in program.port_lists:
            for lo, hi in lst:
                flat += (lo, hi)
            starts.append(len(flat) // 2)
        self.ports = self._ints(flat)
        self.port_start = self._ints(starts)
        # sets: kind 0 as hash tables in one slot pool
        n = len(program.sets)
        self.set_kind = self._ints([s_.kind for s_ in program.sets])
        self.set_interval = self._ints([s_.interval_list for s_ in program.sets])
        offs = []
        masks = []
        total = 0
        for spec in program.sets:
            cap = 1
            while cap < 2 * len(spec.elements) + 2:
                cap <<= 1
            offs.append(total)
            masks.append(cap - 1)
            total += cap
        self.n_slots = total
        self.set_off = self._ints(offs)
        self.set_mask = <uint64_t *>self._alloc(n, sizeof(uint64_t))
        for i in range(n):
            self.set_mask[i] = masks[i]
        self.slots = <Slot *>self._alloc(total, sizeof(Slot))
        for i in range(n):
            spec = program.sets[i]
            if spec.kind != 0:
                continue
            m = self.set_mask[i]
            for key, value in spec.elements.items():
                a, small, b = key
                h = _mix(<uint64_t>(a >> 64), <uint64_t>(a & 0xFFFFFFFFFFFFFFFF), <uint64_t>small,
                         <uint64_t>(b >> 64), <uint64_t>(b & 0xFFFFFFFFFFFFFFFF))
                while True:
                    s = &self.slots[self.set_off[i] + <Py_ssize_t>(h & m)]
                    if not s.used:
                        s.used = 1
                        s.a_hi = <uint64_t>(a >> 64)
                        s.a_lo = <uint64_t>(a & 0xFFFFFFFFFFFFFFFF)
                        s.small = <uint64_t>small
                        s.b_hi = <uint64_t>(b >> 64)
                        s.b_lo = <uint64_t>(b & 0xFFFFFFFFFFFFFFFF)
                        s.op = program.verdicts[value][0]
                        s.arg = program.verdicts[value][1]
                        break
                    h += 1
        starts = [0]
        flat = []
        for lay in program.layouts:
            flat.extend(lay)
            starts.append(len(flat))
        self.layout_start = self._ints(starts)
        self.layout_fields = self._ints(flat)
        # the shapes kube-proxy uses get a straight-line key builder (see _key)
        shapes = {(1,): 1, (0,): 2, (1, 2, 4): 3, (2, 4): 4}
        self.layout_shape = self._ints([shapes.get(tuple(lay), 0) for lay in program.layouts])
        # An address's high 64 bits only for IPv6 (IPv4 ones are all zero:
        # addr_hi stays NULL and readers take 0).
        values = program.address_values
        n = len(values)
        self.addr_lo = <uint64_t *>self._alloc(n, sizeof(uint64_t))
        if self.family == 6:
            self.addr_hi = <uint64_t *>self._alloc(n, sizeof(uint64_t))
        for i in range(n):
            value = values[i]
            if self.family == 6:
                self.addr_hi[i] = <uint64_t>(value >> 64)
            self.addr_lo[i] = <uint64_t>(value & 0xFFFFFFFFFFFFFFFF)
        n = len(program.virtual_servers)
        self.n_vs = n
        self.has_ipvs = n > 0
        self.vs_hi = <uint64_t *>self._alloc(n, sizeof(uint64_t))
        self.vs_lo = <uint64_t *>self._alloc(n, sizeof(uint64_t))
        self.vs_proto = self._ints([vs.protocol for vs in program.virtual_servers])
        self.vs_port = self._ints([vs.port for vs in program.virtual_servers])
        for i in range(n):
            value = program.virtual_servers[i].address
            self.vs_hi[i] = <uint64_t>(value >> 64)
            self.vs_lo[i] = <uint64_t>(value & 0xFFFFFFFFFFFFFFFF)

    def __dealloc__(self):
        # Pointers start NULL (Cython zeroes new objects): safe after a failed __init__.
        free(self.code)
        ks_table_free(self.fc_slots)
        ks_table_free(self.nodes)
        free(self.chain_offset)
        free(self.chain_policy)
        free(self.chain_nat)
        free(self.hook_start)
        free(self.hook_chains)
        free(self.cidrs)
        free(self.cidr_start)
        free(self.ports)
        free(self.port_start)
        free(self.set_kind)
        free(self.set_interval)
        free(self.set_off)
        free(self.set_mask)
        free(self.slots)
        free(self.layout_start)
        free(self.layout_fields)
        free(self.layout_shape)
        free(self.addr_hi)
        free(self.addr_lo)
        free(self.vs_hi)
        free(self.vs_lo)
        free(self.vs_proto)
        free(self.vs_port)

    def memory_bytes(self):
        """Bytes of the C tables (what one engine holds per program)."""
        total = 4 * len(self.p.code) + 4 * len(self.p.chain_offset)
        total += 2 * len(self.p.chain_policy)
        total += sum(32 * len(c) for c in self.p.cidr_lists) + 16 * sum(len(c) for c in self.p.port_lists)
        total += self.n_slots * sizeof(Slot) + 24 * len(self.p.sets)
        total += (16 if self.family == 6 else 8) * len(self.p.address_values)
        return total

    # -- PRNG ----------------------------------------------------------------------------
    cdef inline uint32_t _u32(self) noexcept:
        self.rng += GOLDEN
        return _splitmix32(self.rng)

    cdef inline uint32_t _draw(self, Ctx *ctx, uint8_t kind, uint32_t param) noexcept:
        """A random u32 for a statistic/numgen decision; while recording for the
        flow cache, replay the draws already made, then log each one."""
        cdef uint32_t r
        cdef int i
        if not ctx.recording:
            return self._u32()
        i = ctx.npos
        if i < ctx.nreplay:
            r = ctx.draws[i]
        elif ctx.replay_only:
            r = 0  # the run is thrown away: only the kind of draw it wanted counts
            if not ctx.needs_draw and i < MAX_DRAWS:
                ctx.kinds[i] = kind
                ctx.params[i] = param
            ctx.needs_draw = True
            ctx.npos = i + 1
            return r
        else:
            r = self._u32()
        if i < MAX_DRAWS:
            ctx.draws[i] = r
            ctx.kinds[i] = kind
            ctx.params[i] = param
        else:
            ctx.stateful = True  # too many draws to remember: not cached
        ctx.npos = i + 1
        return r

    def next_u32(self):
        return self._u32()

    def get_rng_state(self):
        return self.rng

    def set_rng_state(self, value):
        self.rng = <uint64_t>(int(value) & 0xFFFFFFFFFFFFFFFF)

    # -- helpers --------------------------------------------------------------------------
    def iface_mask(self, name):
        mask = self._iface_cache.get(name)
        if mask is None:
            mask = 0
            if name:
                for i, (pattern, prefix) in enumerate(self.p.iface_patterns):
                    if (name.startswith(pattern) if prefix else name == pattern):
                        mask |= 1 << i
            self._iface_cache[name] = mask
        return mask

    def verdict(self, kind, addr, port, masq):
        key = (kind, addr, port, masq)
        v = self._verdicts.get(key)
        if v is None:
            if kind == K_DNAT:
                v = Verdict(KINDS[kind], self._address_texts[addr], port, bool(masq))
            else:
                v = Verdict(KINDS[kind], None, None, bool(masq))
            self._verdicts[key] = v
        return v

    cdef inline bint _in(self, int64_t lst, uint64_t hi, uint64_t lo) noexcept:
        cdef int64_t i = self.cidr_start[lst]
        cdef int64_t end = self.cidr_start[lst + 1]
        cdef uint64_t *c
        while i < end:
            c = &self.cidrs[4 * i]
            if (lo & c[3]) == c[1] and (hi & c[2]) == c[0]:
                return True
            i += 1
        return False

    cdef inline bint _port_in(self, int64_t lst, int64_t value) noexcept:
        cdef int64_t i = self.port_start[lst]
        cdef int64_t end = self.port_start[lst + 1]
        while i < end:
            if self.ports[2 * i] <= value <= self.ports[2 * i + 1]:
                return True
            i += 1
        return False

    cdef inline uint64_t _field(self, Pkt *st, int64_t f) noexcept:
        # non-address fields: 2 l4proto, 3 sport, 4 dport, 5 mark
        if f == 2:
            return <uint64_t>st.proto
        if f == 3:
            return <uint64_t>st.sport
        if f == 4:
            return <uint64_t>st.dport
        return st.mark

    cdef inline void _key(self, int64_t layout, Pkt *st, uint64_t *k) noexcept:
        """k[0..4] = a_hi, a_lo, small, b_hi, b_lo (as _fastpath_py.Machine._key)."""
        cdef int64_t i = self.layout_start[layout]
        cdef int64_t end = self.layout_start[layout + 1]
        cdef int64_t f
        cdef int naddr = 0
        cdef uint64_t hi, lo
        cdef int64_t shape = self.layout_shape[layout]
        k[3] = 0
        k[4] = 0
        if shape == 1:  # ip daddr
            k[0] = st.d_hi
            k[1] = st.d_lo
            k[2] = 0
            return
        if shape == 3:  # ip daddr . meta l4proto . th dport
            k[0] = st.d_hi
            k[1] = st.d_lo
            k[2] = (<uint64_t>st.proto << 16) | <uint64_t>st.dport
            return
        if shape == 4:  # meta l4proto . th dport
            k[0] = 0
            k[1] = 0
            k[2] = (<uint64_t>st.proto << 16) | <uint64_t>st.dport
            return
        if shape == 2:  # ip saddr
            k[0] = st.s_hi
            k[1] = st.s_lo
            k[2] = 0
            return
        k[0] = 0
        k[1] = 0
        k[2] = 0
        if self.layout_fields[i] >= 100:  # ipset
            i += 1
            while i < end:
                f = self.layout_fields[i]
                if f <= 1:
                    hi = st.s_hi if f == 0 else st.d_hi
                    lo = st.s_lo if f == 0 else st.d_lo
                    if naddr == 0:
                        k[0] = hi
                        k[1] = lo
                    else:
                        k[3] = hi
                        k[4] = lo
                    naddr += 1
                else:
                    k[2] = (k[2] << 16) | self._field(st, f)
                i += 1
            return
        while i < end:
            f = self.layout_fields[i]
            if f <= 1:
                k[0] = st.s_hi if f == 0 else st.d_hi
                k[1] = st.s_lo if f == 0 else st.d_lo
            else:
                k[2] = (k[2] << (8 if f == 2 else 32 if f == 5 else 16)) | self._field(st, f)
            i += 1

    cdef inline Slot *_lookup(self, int64_t sid, uint64_t *k) noexcept:
        """The slot holding key ``k`` in hash set ``sid``; NULL when absent."""
        cdef uint64_t m = self.set_mask[sid]
        cdef uint64_t h = _mix(k[0], k[1], k[2], k[3], k[4])
        cdef Slot *base = &self.slots[self.set_off[sid]]
        cdef Slot *s
        while True:
            s = &base[h & m]
            if not s.used:
                return NULL
            if s.a_lo == k[1] and s.small == k[2] and s.a_hi == k[0] and s.b_lo == k[4] \
                    and s.b_hi == k[3]:
                return s
            h += 1

    cdef object _pykey(self, uint64_t *k):
        return (
            (<object>k[0] << 64) | <object>k[1],
            <object>k[2],
            (<object>k[3] << 64) | <object>k[4],
        )

    cdef bint _set_has(self, int64_t sid, int64_t layout, Pkt *st, double now) except -1:
        cdef int64_t kind = self.set_kind[sid]
        cdef int64_t f
        cdef uint64_t k[5]
        if kind == 1:
            f = self.layout_fields[self.layout_start[layout + 1] - 1]
            if f <= 1:
                return self._in(self.set_interval[sid], st.s_hi if f == 0 else st.d_hi,
                                st.s_lo if f == 0 else st.d_lo)
            return self._port_in(self.set_interval[sid], <int64_t>self._field(st, f))
        if kind == 3:
            values = []
            for f in self._layouts[layout][1:]:
                if f <= 1:
                    values.append(
                        ((<object>st.s_hi << 64) | <object>st.s_lo) if f == 0
                        else ((<object>st.d_hi << 64) | <object>st.d_lo)
                    )
                else:
                    values.append(<object>self._field(st, f))
            return bool(self.state.rows_have(sid, values))
        self._key(layout, st, k)
        if kind == 2:
            return bool(self.state.dyn_has(sid, self._pykey(k), now))
        return self._lookup(sid, k) != NULL

    cdef bint _ipvs_match(self, Pkt *st, int64_t vaddr, int64_t proto, int64_t port) noexcept:
        cdef int64_t vs = st.vs
        if vs < 0:
            return False
        if vaddr >= 0 and not self._in(vaddr, self.vs_hi[vs], self.vs_lo[vs]):
            return False
        if proto != 0 and self.vs_proto[vs] != proto:
            return False
        return port == 0 or self.vs_port[vs] == port


    # -- the flow cache -------------------------------------------------------------------
    # A packet's path depends only on its fields and on the random numbers it
    # draws, unless it reads or writes kernel state (recent tables, timeout
    # sets, IPVS, tracked connections). For such stateless paths the cache
    # keeps, per packet key, the tree of draws the path made (statistic:
    # match or not; numgen: the value) down to the result. A cached packet
    # draws the same numbers from the same stream and walks the tree instead
    # of the rules: the same verdicts, rule counts and PRNG state as the
    # interpreter, in one hash probe. A branch not seen yet is filled by
    # running the interpreter with the draws already made replayed.
    # IPv4 slots are 128 bytes, a pair of cache lines fetched together: after
    # the key and the root come copies of the root's first L4_MAX leaves, so a
    # batch packet one draw deep into a Service of up to eleven endpoints
    # reads one slot and nothing else. The tree in the node pool stays
    # complete (lookup() and deeper trees read it).
    cdef void _fc_init(self, int64_t cap) except *:
        ks_table_free(self.fc_slots)
        self.fc_slots = NULL
        self.fc_slots = <FlowSlot *>ks_table_alloc(cap << self.fc_shift)
        if self.fc_slots == NULL:
            raise MemoryError()
        self.fc_mask = cap - 1
        self.fc_used = 0
        ks_table_free(self.nodes)
        self.nodes = NULL
        self.cap_nodes = 4096
        self.nodes = <Node *>ks_table_alloc(self.cap_nodes * sizeof(Node))
        if self.nodes == NULL:
            raise MemoryError()
        self.n_nodes = 0

    def clear_flow_cache(self):
        self._fc_init(4096)

    def flow_cache_info(self):
        """``(flows cached, tree nodes, bytes)``."""
        return (
            self.fc_used,
            self.n_nodes,
            ((self.fc_mask + 1) << self.fc_shift) + self.cap_nodes * sizeof(Node),
        )

    cdef inline FlowSlot *_fs(self, int64_t i) noexcept:
        return <FlowSlot *>(<char *>self.fc_slots + (i << self.fc_shift))

    cdef inline uint64_t _fc_hash(self, Pkt *st, uint32_t meta) noexcept:
        return _mix(st.d_hi, st.d_lo, <uint64_t>meta ^ (st.iif << 32), st.s_hi, st.s_lo)

    # IPv4 keys are one word: every way in (lookup, lookup_batch) makes an
    # IPv4 machine's addresses from 32-bit values, with zero high words.
    cdef inline bint _fc_is(self, FlowSlot *f, Pkt *st, uint32_t meta) noexcept:
        if f.meta != meta or f.iif != st.iif:
            return False
        if self.family == 4:
            return f.key[0] == (st.s_lo | (st.d_lo << 32))
        return f.key[3] == st.d_lo and f.key[1] == st.s_lo and f.key[2] == st.d_hi and \
            f.key[0] == st.s_hi

    cdef inline void _fc_set_key(self, FlowSlot *f, Pkt *st, uint32_t meta) noexcept:
        f.meta = meta
        f.iif = st.iif
        if self.family == 4:
            f.key[0] = st.s_lo | (st.d_lo << 32)
        else:
            f.key[0] = st.s_hi
            f.key[1] = st.s_lo
            f.key[2] = st.d_hi
            f.key[3] = st.d_lo

    cdef inline void _fc_get_key(self, FlowSlot *f, Pkt *st) noexcept:
        st.iif = f.iif
        if self.family == 4:
            st.s_hi = 0
            st.s_lo = f.key[0] & 0xFFFFFFFF
            st.d_hi = 0
            st.d_lo = f.key[0] >> 32
        else:
            st.s_hi = f.key[0]
            st.s_lo = f.key[1]
            st.d_hi = f.key[2]
            st.d_lo = f.key[3]

    cdef int64_t _fc_find(self, Pkt *st, uint32_t meta) noexcept:
        """The slot of this packet's key (``meta`` with FC_USED), or of the free
        slot where it would go."""
        cdef uint64_t h = self._fc_hash(st, meta)
        cdef FlowSlot *f
        while True:
            f = self._fs(<int64_t>(h & <uint64_t>self.fc_mask))
            if f.meta == 0 or self._fc_is(f, st, meta):
                return <int64_t>(h & <uint64_t>self.fc_mask)
            h += 1

    cdef void _fc_grow(self) except *:
        cdef int64_t old_cap = self.fc_mask + 1
        cdef char *old = <char *>self.fc_slots
        cdef int64_t i, cap = old_cap * 2
        cdef uint64_t h
        cdef FlowSlot *f
        cdef Pkt key
        self.fc_slots = <FlowSlot *>ks_table_alloc(cap << self.fc_shift)
        if self.fc_slots == NULL:
            self.fc_slots = <FlowSlot *>old
            raise MemoryError()
        self.fc_mask = cap - 1
        memset(&key, 0, sizeof(Pkt))
        for i in range(old_cap):
            f = <FlowSlot *>(old + (i << self.fc_shift))
            if f.meta != 0:
                self._fc_get_key(f, &key)
                h = self._fc_hash(&key, f.meta)
                while self._fs(<int64_t>(h & <uint64_t>self.fc_mask)).meta != 0:
                    h += 1
                memcpy(self._fs(<int64_t>(h & <uint64_t>self.fc_mask)), f,
                       <size_t>1 << self.fc_shift)
        ks_table_free(old)
        self.fc_gen += 1

    cdef void _fc_keep(self, FlowSlot *f) noexcept:
        """Copy an IPv4 root draw's first leaves into its slot (``head.res``:
        how many; a child that is not a leaf, or does not fit, is not kept)."""
        cdef Node *nd = &f.head
        cdef Node *leaf
        cdef Leaf4 *kept = <Leaf4 *>&f.key[1]
        cdef int64_t k, n
        if self.family != 4 or (nd.type != N_STAT and nd.type != N_NUMGEN):
            return
        n = 2 if nd.type == N_STAT else nd.value
        if n > L4_MAX:
            n = L4_MAX
        for k in range(n):
            leaf = &self.nodes[nd.link + k]
            if leaf.type == N_LEAF and leaf.value <= 255 and (leaf.res >> 4) <= 1:
                kept[k].addr = leaf.addr
                kept[k].port = leaf.port
                kept[k].rules = <uint8_t>leaf.value
                kept[k].res = <uint8_t>((leaf.res & 0x1F) | (0x20 if leaf.link >= 0 else 0) | L4_KEPT)
            else:
                kept[k].res = 0
        nd.res = <uint8_t>n

    cdef int32_t _new_nodes(self, int64_t n) except -1:
        """``n`` fresh nodes; a group of children starts on a cache line when
        that keeps it on fewer lines (padding nodes stay N_UNKNOWN, unused)."""
        cdef int64_t first = self.n_nodes
        cdef int64_t cap = self.cap_nodes
        cdef Node *grown
        if n > 1 and ((first & 3) + n + 3) // 4 > (n + 3) // 4:
            first = (first + 3) & ~(<int64_t>3)
        if first + n > 0x7FFFFFFF:
            return -1
        if first + n > cap:
            while first + n > cap:
                cap *= 2
            grown = <Node *>ks_table_alloc(cap * sizeof(Node))
            if grown == NULL:
                raise MemoryError()
            memcpy(grown, self.nodes, self.cap_nodes * sizeof(Node))
            ks_table_free(self.nodes)
            self.nodes = grown
            self.cap_nodes = cap
        self.n_nodes = first + n
        return <int32_t>first

    cdef int _cached_run(self, Pkt *st, int origin, Ctx *ctx, int64_t known = -1,
                         bint kept = False) except -1:
        """Run a packet through the flow cache (``known``: its slot, when the
        batch pipeline already found it and it holds this very flow; ``kept``:
        the caller reads only ``st.dnat >= 0``, not which address id, so a leaf
        copied into an IPv4 slot will do)."""
        cdef uint32_t meta = <uint32_t>st.dport | (<uint32_t>st.proto << 16) | \
            (<uint32_t>origin << 24) | FC_USED
        cdef int64_t slot, node, child
        cdef FlowSlot *f
        cdef Node *nd
        cdef Leaf4 *lf
        cdef uint32_t r
        cdef uint64_t branch
        cdef int res, i
        cdef Pkt orig
        if not self.flow_cache or st.sport != 0:
            return self._run(st, origin, ctx)
        orig = st[0]
        if known >= 0:
            slot = known
        else:
            if (self.fc_used + 1) * 2 > self.fc_mask + 1 and \
                    self.fc_mask + 1 < 2 * FLOW_CACHE_MAX:
                self._fc_grow()
            slot = self._fc_find(st, meta)
        f = self._fs(slot)
        ctx.nreplay = 0
        if f.meta != 0:
            if f.root < 0:
                return self._run(st, origin, ctx)
            nd = &f.head
            while True:
                if nd.type == N_LEAF:
                    st.d_lo = nd.addr if self.family == 4 else st.d_lo
                    st.dnat = nd.link
                    st.dport = nd.port
                    st.masq = nd.res >> 4
                    st.rules = nd.value
                    return nd.res & 15
                if nd.type == N_UNKNOWN:
                    break
                r = self._u32()
                ctx.draws[ctx.nreplay] = r
                ctx.nreplay += 1
                if nd.type == N_STAT:
                    branch = 0 if (r & 0x7FFFFFFF) < nd.value else 1
                else:
                    branch = (<uint64_t>r * <uint64_t>nd.value) >> 32
                if kept and nd == &f.head and branch < nd.res:
                    lf = (<Leaf4 *>&f.key[1]) + branch
                    if lf.res & L4_KEPT:
                        st.d_lo = lf.addr
                        st.dnat = 0 if lf.res & 0x20 else -1  # an id, not the id: see ``kept``
                        st.dport = lf.port
                        st.masq = (lf.res >> 4) & 1
                        st.rules = lf.rules
                        return lf.res & 15
                nd = &self.nodes[nd.link + <int64_t>branch]
        else:
            if self.fc_used >= FLOW_CACHE_MAX:
                return self._run(st, origin, ctx)
            node = self._new_nodes(1)
            if node < 0:
                return self._run(st, origin, ctx)
            f = self._fs(slot)
            self._fc_set_key(f, st, meta)
            f.root = <int32_t>node
            f.head = self.nodes[node]
            self.fc_used += 1
        # record: run the rules, the draws made so far replayed first
        ctx.recording = True
        ctx.stateful = False
        ctx.npos = 0
        try:
            res = self._run(st, origin, ctx)
        finally:
            ctx.recording = False
        f = self._fs(slot)
        if ctx.stateful:
            f.root = -2
            return res
        node = f.root
        for i in range(ctx.npos):
            nd = &self.nodes[node]
            if nd.type == N_UNKNOWN:
                child = self._new_nodes(2 if ctx.kinds[i] == N_STAT else ctx.params[i])
                if child < 0:
                    f.root = -2
                    return res
                nd = &self.nodes[node]  # the pool may have moved
                nd.type = ctx.kinds[i]
                nd.value = ctx.params[i]
                nd.link = <int32_t>child
            r = ctx.draws[i]
            if nd.type == N_STAT:
                branch = 0 if (r & 0x7FFFFFFF) < nd.value else 1
            else:
                branch = (<uint64_t>r * <uint64_t>nd.value) >> 32
            node = nd.link + <int64_t>branch
        self._leaf(node, res, st)
        self._fill(&orig, origin, f.root, ctx, 0)
        f = self._fs(slot)
        f.head = self.nodes[f.root]  # only this path changes a tree
        self._fc_keep(f)
        return res

    cdef void _leaf(self, int64_t node, int res, Pkt *st) noexcept:
        cdef Node *nd = &self.nodes[node]
        nd.type = N_LEAF
        nd.res = <uint8_t>(res | (st.masq << 4))
        nd.link = <int32_t>st.dnat
        nd.addr = <uint32_t>st.d_lo
        nd.port = <uint16_t>st.dport
        nd.value = <uint32_t>st.rules

    cdef int _fill(self, Pkt *orig, int origin, int64_t node, Ctx *ctx, int depth) except -1:
        """Complete the tree under ``node`` (reached by ``ctx.draws[:depth]``) by
        running the rules with forced draws, without drawing or writing state:
        after the first packet of a flow, every later one is a cache hit."""
        cdef Node *nd = &self.nodes[node]
        cdef int64_t k, n, child, first
        cdef uint32_t value
        cdef uint64_t forced
        cdef Pkt st
        cdef int res
        if nd.type != N_STAT and nd.type != N_NUMGEN:
            return 0
        if depth >= MAX_DRAWS or self.n_nodes > 0x7FFF0000:
            return 0
        n = 2 if nd.type == N_STAT else nd.value
        for k in range(n):
            nd = &self.nodes[node]
            first = nd.link
            value = nd.value
            if nd.type == N_STAT:
                if k == 0:
                    if value == 0:
                        continue  # never matches
                    forced = 0
                else:
                    if value > 0x7FFFFFFF:
                        continue  # always matches
                    forced = 0x7FFFFFFF
            else:
                forced = ((<uint64_t>k << 32) + value - 1) // value  # ceil(k * 2^32 / m)
            child = first + k
            if self.nodes[child].type == N_UNKNOWN:
                st = orig[0]
                ctx.draws[depth] = <uint32_t>forced
                ctx.nreplay = depth + 1
                ctx.npos = 0
                ctx.recording = True
                ctx.replay_only = True
                ctx.needs_draw = False
                ctx.stateful = False
                try:
                    res = self._run(&st, origin, ctx)
                finally:
                    ctx.recording = False
                    ctx.replay_only = False
                if ctx.stateful:
                    continue  # left for a real packet to fill
                if not ctx.needs_draw:
                    self._leaf(child, res, &st)
                    continue
                if depth + 1 >= MAX_DRAWS:
                    continue
                # the path draws again: make that draw node and fill under it
                first = self._new_nodes(2 if ctx.kinds[depth + 1] == N_STAT else ctx.params[depth + 1])
                if first < 0:
                    return 0
                nd = &self.nodes[child]
                nd.type = ctx.kinds[depth + 1]
                nd.value = ctx.params[depth + 1]
                nd.link = <int32_t>first
            if self.nodes[child].type == N_STAT or self.nodes[child].type == N_NUMGEN:
                ctx.draws[depth] = <uint32_t>forced
                self._fill(orig, origin, child, ctx, depth + 1)
        return 0

    # -- the interpreter -------------------------------------------------------------------
    cdef int _chain(self, int64_t base, Pkt *st, Ctx *ctx) except -1:
        cdef uint32_t *code = self.code
        cdef int64_t stack[MAX_DEPTH]
        cdef int depth = 0
        cdef int64_t pc = <int64_t>self.chain_offset[base] * 4
        cdef int64_t next_pc, entry
        cdef uint32_t op, a, b, c, rule_id
        cdef uint64_t pick
        cdef bint ok, hit
        cdef bint dry = ctx.oracle != NULL
        cdef bint tracing = ctx.obs != NULL
        cdef double now = ctx.now
        cdef uint64_t k[5]
        cdef Slot *slot
        while True:
            op = code[pc]
            if op == END:
                if depth == 0:
                    return R_DROP if self.chain_policy[base] else R_ACCEPT
                depth -= 1
                pc = stack[depth]
                continue
            st.rules += 1
            rule_id = code[pc + 1]
            next_pc = <int64_t>code[pc + 2] * 4
            pc += 4
            ok = True
            while True:
                op = code[pc]
                if op >= V_NONE:
                    break
                a = code[pc + 1]
                b = code[pc + 2]
                c = code[pc + 3]
                if op == M_DADDR4:
                    ok = ((st.d_lo & b) == a) != (c != 0)
                elif op == M_SADDR4:
                    ok = ((st.s_lo & b) == a) != (c != 0)
                elif op == M_PROTO:
                    hit = ((a & 1) and st.proto == 6) or ((a & 2) and st.proto == 17) or \
                        ((a & 4) and st.proto == 132)
                    ok = hit != (b != 0)
                elif op == M_DPORT1:
                    ok = (a <= st.dport and st.dport <= b) != (c != 0)
                elif op == M_SPORT1:
                    ok = (a <= st.sport and st.sport <= b) != (c != 0)
                elif op == M_CTSTATE:
                    ok = ((st.ct & a) != 0) != (b != 0)
                elif op == M_MARK:
                    ok = ((st.mark & b) == a) != (c != 0)
                elif op == M_SET:
                    if self.set_kind[a] == 0:
                        self._key(b, st, k)
                        ok = (self._lookup(a, k) != NULL) != (c != 0)
                    else:
                        if self.set_kind[a] == 2:
                            ctx.stateful = True
                        ok = self._set_has(a, b, st, now) != (c != 0)
                elif op == M_DADDR:
                    ok = self._in(a, st.d_hi, st.d_lo) != (b != 0)
                elif op == M_SADDR:
                    ok = self._in(a, st.s_hi, st.s_lo) != (b != 0)
                elif op == M_DPORT:
                    ok = self._port_in(a, st.dport) != (b != 0)
                elif op == M_SPORT:
                    ok = self._port_in(a, st.sport) != (b != 0)
                elif op == M_ADDRTYPE:
                    if a == 0:
                        ok = self._in(self.local_list, st.s_hi, st.s_lo) != (b != 0)
                    else:
                        ok = self._in(self.local_list, st.d_hi, st.d_lo) != (b != 0)
                elif op == M_STAT:
                    if dry:
                        hit = (<object>ctx.oracle).bit(a)
                    else:
                        hit = (self._draw(ctx, N_STAT, a) & 0x7FFFFFFF) < a
                    ok = hit != (b != 0)
                elif op == M_RECENT and ctx.replay_only:
                    ctx.stateful = True
                    ok = False
                elif op == M_RECENT:
                    ctx.stateful = True
                    if b & 16:
                        addr = (<object>st.d_hi << 64) | <object>st.d_lo
                    else:
                        addr = (<object>st.s_hi << 64) | <object>st.s_lo
                    ok = self.state.recent(a, b, <int64_t>c - 1, addr, now, dry)
                elif op == M_IPVS:
                    ctx.stateful = True
                    ok = self._ipvs_match(st, <int64_t>a - 1, b, c)
                elif op == M_NEVER:
                    ok = b != 0
                elif op == M_IIF:
                    ok = ((st.iif >> a) & 1) != (b != 0)
                elif op == M_OIF:
                    ok = ((st.oif >> a) & 1) != (b != 0)
                elif op == S_MARK:
                    if a == 0:
                        st.mark = (st.mark & ~(<uint64_t>c) & 0xFFFFFFFF) ^ <uint64_t>b
                    elif a == 1:
                        st.mark |= <uint64_t>b
                    elif a == 2:
                        st.mark ^= <uint64_t>b
                    else:
                        st.mark &= <uint64_t>b
                elif op == S_SETUPD:
                    ctx.stateful = True
                    if not ctx.replay_only:
                        self._key(b, st, k)
                        self.state.dyn_update(a, self._pykey(k), now, dry)
                elif op != S_NOP:
                    raise EngineError(f"unknown opcode {op}")
                if not ok:
                    break
                pc += 4
            if tracing:
                (<object>ctx.obs).append((0, rule_id, ok))
            if not ok:
                pc = next_pc
                continue
            a = code[pc + 1]
            if op == V_VMAP:
                self._key(code[pc + 2], st, k)
                slot = self._lookup(a, k)
                if slot == NULL:
                    op = V_NONE
                else:
                    op = slot.op
                    a = slot.arg
            elif op == V_NUMGEN:
                if dry:
                    pick = (<object>ctx.oracle).pick(a)
                else:
                    pick = (<uint64_t>self._draw(ctx, N_NUMGEN, a) * <uint64_t>a) >> 32
                entry = pc + 4 + 4 * <int64_t>pick
                op = code[entry]
                a = code[entry + 1]
            if op == V_NONE:
                pc = next_pc
            elif op == V_JUMP:
                if depth >= MAX_DEPTH:
                    raise EngineError("jump depth over 64: a loop in the rules?")
                stack[depth] = next_pc
                depth += 1
                pc = <int64_t>a * 4
            elif op == V_GOTO:
                pc = <int64_t>a * 4
            elif op == V_RETURN:
                if depth == 0:
                    return R_DROP if self.chain_policy[base] else R_ACCEPT
                depth -= 1
                pc = stack[depth]
            elif op == V_ACCEPT:
                return R_ACCEPT
            elif op == V_DROP:
                return R_DROP
            elif op == V_REJECT:
                return R_REJECT
            elif op == V_DNAT:
                if self.family == 4:
                    st.d_lo = code[pc + 3]
                else:
                    st.d_hi = self.addr_hi[a]
                    st.d_lo = self.addr_lo[a]
                b = code[pc + 2]
                if b:
                    st.dport = b
                st.ct |= CT_DNAT
                st.dnat = a
                return R_NAT
            elif op == V_SNAT or (op == V_MASQ and self.masquerade_source):
                st.masq = 1
                return R_NAT
            elif op == V_MASQ:  # no address to masquerade to: the kernel drops
                if ctx.obs != NULL:
                    (<object>ctx.obs).append((5, 0, 0))
                return R_DROP
            else:
                raise EngineError(f"unknown verdict opcode {op}")

    cdef int _hook(self, int h, Pkt *st, Ctx *ctx) except -1:
        cdef int64_t i = self.hook_start[h]
        cdef int64_t end = self.hook_start[h + 1]
        cdef int64_t c
        cdef int res
        cdef bint nat_done = False
        while i < end:
            c = self.hook_chains[i]
            i += 1
            if c == IPVS_CHAIN:
                res = self._ipvs(st, ctx)
                if res != R_ACCEPT:
                    return res
                continue
            if self.chain_nat[c]:
                if ctx.est != NULL:
                    self._apply_ct(h, st, <tuple>ctx.est)
                    continue
                if nat_done:
                    continue
            if ctx.obs != NULL:
                (<object>ctx.obs).append((1, h, c))
            res = self._chain(c, st, ctx)
            if res == R_DROP or res == R_REJECT:
                return res
            if res == R_NAT:
                nat_done = True
        return R_ACCEPT

    cdef void _apply_ct(self, int h, Pkt *st, tuple est) except *:
        cdef int64_t addr = est[0]
        if (h == H_PREROUTING or h == H_OUTPUT) and addr >= 0 and est[3] < 0:
            st.d_hi = self.addr_hi[addr] if self.addr_hi != NULL else 0
            st.d_lo = self.addr_lo[addr]
            st.dport = est[1]
            st.dnat = addr
        elif h == H_POSTROUTING and est[2]:
            st.masq = 1

    cdef int _ipvs(self, Pkt *st, Ctx *ctx) except -1:
        cdef int64_t vs_id, server
        state = self.state
        obs = <object>ctx.obs if ctx.obs != NULL else None
        oracle = <object>ctx.oracle if ctx.oracle != NULL else None
        if ctx.est != NULL:
            est = <tuple>ctx.est
            if est[3] < 0:
                return R_ACCEPT
            vs_id = est[3]
            server = est[4]
        else:
            daddr = (<object>st.d_hi << 64) | <object>st.d_lo
            vs_id = state.ipvs_lookup(daddr, st.proto, st.dport)
            if vs_id >= 0:
                ctx.stateful = True
                if ctx.replay_only:
                    return R_DROP  # never schedule while filling the cache
            if vs_id < 0:
                if obs is not None:
                    obs.append((2, -1, -1))
                return R_ACCEPT
            saddr = (<object>st.s_hi << 64) | <object>st.s_lo
            server = state.ipvs_schedule(vs_id, saddr, daddr, ctx.now, oracle)
            if obs is not None:
                obs.append((2, vs_id, server))
            if server < 0:
                return R_REJECT
        rs = self._vs_specs[vs_id].servers[server]
        st.d_hi = <uint64_t>(rs.address >> 64)
        st.d_lo = <uint64_t>(rs.address & 0xFFFFFFFFFFFFFFFF)
        st.dport = rs.port
        st.ct |= CT_DNAT
        st.dnat = rs.addr_id
        st.vs = vs_id
        st.server = server
        return R_NAT

    cdef int _run(self, Pkt *st, int origin, Ctx *ctx) except -1:
        """Run one packet through the hooks (see _fastpath_py.Machine.run)."""
        cdef int res
        cdef bint local
        est = None
        key = None
        ctx.est = NULL
        if st.sport:
            key = (
                st.proto,
                (<object>st.s_hi << 64) | <object>st.s_lo,
                st.sport,
                (<object>st.d_hi << 64) | <object>st.d_lo,
                st.dport,
            )
            est = self.state.ct_get(key, ctx.now)
            if est is not None:
                ctx.est = <PyObject *>est
                st.ct = CT_ESTABLISHED | (CT_DNAT if est[0] >= 0 else 0)
                if ctx.obs != NULL:
                    (<object>ctx.obs).append((3, 0, 0))
        if origin == 1:
            st.oif = self.primary_mask
            res = self._hook(H_OUTPUT, st, ctx)
            if res == R_NAT:
                res = R_ACCEPT
            if res == R_ACCEPT:
                st.oif = self.lo_mask if self._in(self.local_list, st.d_hi, st.d_lo) \
                    else self.primary_mask
                res = self._hook(H_POSTROUTING, st, ctx)
        else:
            res = self._hook(H_PREROUTING, st, ctx)
            if res == R_ACCEPT:
                local = self._in(self.local_list, st.d_hi, st.d_lo)
                if ctx.obs != NULL:
                    (<object>ctx.obs).append((4, int(local), 0))
                if local:
                    st.oif = self.lo_mask
                    res = self._hook(H_INPUT, st, ctx)
                    if res == R_NAT:
                        st.oif = self.primary_mask
                        res = self._hook(H_POSTROUTING, st, ctx)
                else:
                    st.oif = self.primary_mask
                    res = self._hook(H_FORWARD, st, ctx)
                    if res == R_ACCEPT:
                        res = self._hook(H_POSTROUTING, st, ctx)
        if res == R_NAT:
            res = R_ACCEPT
        if res == R_ACCEPT and key is not None and est is None and ctx.oracle == NULL:
            self.state.ct_put(key, (st.dnat, st.dport, st.masq, st.vs, st.server), ctx.now)
        ctx.est = NULL
        return res

    cdef inline void _init(self, Pkt *st, uint64_t s_hi, uint64_t s_lo, int64_t sport,
                           uint64_t d_hi, uint64_t d_lo, int64_t dport, int64_t proto,
                           uint64_t iif) noexcept:
        st.s_hi = s_hi
        st.s_lo = s_lo
        st.d_hi = d_hi
        st.d_lo = d_lo
        st.proto = proto
        st.sport = sport
        st.dport = dport
        st.mark = 0
        st.ct = CT_NEW
        st.iif = iif
        st.oif = 0
        st.masq = 0
        st.dnat = -1
        st.rules = 0
        st.vs = -1
        st.server = -1

    def run(self, int origin, saddr, int64_t sport, daddr, int64_t dport, int64_t proto,
            iif, double now, obs=None, oracle=None):
        cdef Pkt st
        self._init(&st, <uint64_t>(saddr >> 64), <uint64_t>(saddr & 0xFFFFFFFFFFFFFFFF), sport,
                   <uint64_t>(daddr >> 64), <uint64_t>(daddr & 0xFFFFFFFFFFFFFFFF), dport, proto,
                   <uint64_t>iif)
        cdef Ctx ctx
        ctx.now = now
        ctx.obs = <PyObject *>obs if obs is not None else NULL
        ctx.oracle = <PyObject *>oracle if oracle is not None else NULL
        ctx.recording = False
        ctx.replay_only = False
        cdef int res = self._run(&st, origin, &ctx)
        return self._result(res, &st)

    cdef tuple _result(self, int res, Pkt *st):
        if res == R_DROP:
            return (K_DROP, -1, 0, 0, st.rules)
        if res == R_REJECT:
            return (K_REJECT, -1, 0, 0, st.rules)
        if st.dnat >= 0:
            return (K_DNAT, st.dnat, st.dport, st.masq, st.rules)
        return (K_ACCEPT, -1, 0, st.masq, st.rules)

    # -- Python-facing -------------------------------------------------------------------
    def packet_iif(self, packet):
        if packet.iif is not None:
            return self.iface_mask(packet.iif)
        origin = packet._origin
        return self.pod_mask if origin == 0 else self.primary_mask if origin == 2 else 0

    def lookup(self, packet, double now):
        cdef Pkt st
        cdef int res
        cdef uint64_t s_hi, s_lo, d_hi, d_lo
        cdef int64_t kind, addr, port, masq
        if packet._version != self.family:
            raise EngineError(
                f"packet to {packet.dst}: an IPv{packet._version} packet for an "
                f"IPv{self.family} ruleset"
            )
        src = packet._src
        if src < 0:
            if not self.has_node_address:
                raise EngineError("packet src: the ruleset names no node address to default to")
            s_hi = self.node_hi
            s_lo = self.node_lo
        elif self.family == 4:
            s_hi = 0
            s_lo = <uint64_t>src
        else:
            s_hi = <uint64_t>(src >> 64)
            s_lo = <uint64_t>(src & 0xFFFFFFFFFFFFFFFF)
        dst = packet._dst
        if self.family == 4:
            d_hi = 0
            d_lo = <uint64_t>dst
        else:
            d_hi = <uint64_t>(dst >> 64)
            d_lo = <uint64_t>(dst & 0xFFFFFFFFFFFFFFFF)
        if packet.iif is None:
            origin = packet._origin
            iif = self.pod_mask if origin == 0 else self.primary_mask if origin == 2 else 0
        else:
            iif = self.iface_mask(packet.iif)
        self._init(&st, s_hi, s_lo, packet._sport, d_hi, d_lo, packet.dport, packet._proto,
                   <uint64_t>iif)
        cdef Ctx ctx
        ctx.now = now
        ctx.obs = NULL
        ctx.oracle = NULL
        ctx.recording = False
        ctx.replay_only = False
        res = self._cached_run(&st, packet._origin, &ctx)
        if res == R_DROP:
            kind, addr, port, masq = K_DROP, -1, 0, 0
        elif res == R_REJECT:
            kind, addr, port, masq = K_REJECT, -1, 0, 0
        elif st.dnat >= 0:
            kind, addr, port, masq = K_DNAT, st.dnat, st.dport, st.masq
        else:
            kind, addr, port, masq = K_ACCEPT, -1, 0, st.masq
        v = self._verdicts.get((kind, addr, port, masq))
        if v is None:
            v = self.verdict(kind, addr, port, masq)
        return v


    cdef inline void _prefetch_stage(
        self, Py_ssize_t i, Py_ssize_t n, int64_t *ring, int64_t *window,
        const uint32_t[:] dst4, const uint64_t[:] dst6, const uint32_t[:] src4,
        const uint64_t[:] src6, const uint16_t[:] dport_v, const uint8_t[:] proto_v,
        bint has_src, bint has_proto, bint v6, int origin, Pkt *ahead,
    ) noexcept:
        """Software pipelining over the batch: AHEAD_SLOT packets ahead, prefetch
        the flow slot (one cache line holding a copy of the tree's root; IPv4:
        two, the second with copies of the root's first leaves);
        AHEAD_FIND ahead, find it (now cached; the slot is kept for the
        packet's turn) and prefetch the leaf the packet will reach, unless the
        slot holds a copy of it. Which leaf
        depends on the packet's random draw, and the draws are a known stream:
        if every packet in between draws as its tree's root says (one draw
        for nftables' numgen), the packet's draw is the PRNG ``window + 1``
        steps on, so its leaf is prefetched exactly; a wrong guess only costs
        a useless prefetch. Each packet's cache misses overlap with other
        packets' work. ``ring``: per packet ahead, its slot, the table
        generation, and the draws it is expected to make; ``window``: those
        expected draws summed over the packets from ``i`` up to the one
        AHEAD_FIND ahead."""
        cdef Py_ssize_t j
        cdef int stage
        cdef uint32_t meta, r
        cdef int64_t slot, expect
        cdef FlowSlot *f
        cdef Node *nd
        cdef uint64_t branch
        for stage in range(2):  # 0: the packet AHEAD_SLOT on; 1: the one AHEAD_FIND on
            j = i + (AHEAD_SLOT if stage == 0 else AHEAD_FIND)
            if j >= n:
                continue
            if v6:
                ahead.d_hi = dst6[2 * j]
                ahead.d_lo = dst6[2 * j + 1]
                if has_src:
                    ahead.s_hi = src6[2 * j]
                    ahead.s_lo = src6[2 * j + 1]
            else:
                ahead.d_lo = dst4[j]
                if has_src:
                    ahead.s_lo = src4[j]
            meta = <uint32_t>dport_v[j] | (<uint32_t>(proto_v[j] if has_proto else 6) << 16) | \
                (<uint32_t>origin << 24) | FC_USED
            if stage == 0:
                f = self._fs(<int64_t>(self._fc_hash(ahead, meta) & <uint64_t>self.fc_mask))
                __builtin_prefetch(f)
                if not v6:
                    __builtin_prefetch(<char *>f + 64)  # the kept leaves
                continue
            slot = self._fc_find(ahead, meta)
            f = self._fs(slot)
            # a slot that holds this flow stays its slot until the table is rebuilt
            ring[j & 31] = slot if f.meta != 0 else -1
            ring[32 + (j & 31)] = self.fc_gen
            expect = 1  # a new flow: guess one draw
            if f.meta != 0 and f.root >= 0:
                nd = &f.head
                if nd.type == N_STAT or nd.type == N_NUMGEN:
                    r = _splitmix32(self.rng + <uint64_t>(window[0] + 1) * GOLDEN)
                    if nd.type == N_STAT:
                        branch = 0 if (r & 0x7FFFFFFF) < nd.value else 1
                    else:
                        branch = (<uint64_t>r * <uint64_t>nd.value) >> 32
                    if branch >= nd.res:  # (nd.res: the leaves kept in an IPv4 slot)
                        __builtin_prefetch(&self.nodes[nd.link + <int64_t>branch])
                elif nd.type == N_LEAF:
                    expect = 0
            ring[64 + (j & 31)] = expect
            window[0] += expect - ring[64 + (i & 31)]

    def lookup_batch(self, dst, dport, proto, src, sport, int origin, iif, double now,
                     Py_ssize_t n, kind_out, addr_out, port_out, masq_out, rules_out):
        """Fill the output buffers for ``n`` packets (see the pure twin)."""
        cdef const uint16_t[:] dport_v = dport
        cdef const uint8_t[:] proto_v
        cdef const uint16_t[:] sport_v
        cdef const uint32_t[:] dst4
        cdef const uint32_t[:] src4
        cdef const uint64_t[:] dst6
        cdef const uint64_t[:] src6
        cdef uint8_t[:] kind_v = kind_out
        cdef uint16_t[:] port_v = port_out
        cdef uint8_t[:] masq_v = masq_out
        cdef uint32_t[:] rules_v = rules_out
        cdef uint32_t[:] addr4
        cdef uint64_t[:] addr6
        cdef bint v6 = self.family == 6
        cdef bint has_proto = proto is not None
        cdef bint has_src = src is not None
        cdef bint has_sport = sport is not None
        cdef Py_ssize_t i
        cdef Pkt st
        cdef int res
        cdef uint64_t s_hi = self.node_hi, s_lo = self.node_lo, d_hi = 0, d_lo = 0
        cdef uint64_t iif_mask = <uint64_t>iif
        cdef int64_t pr = 6, sp = 0
        cdef Pkt ahead
        cdef int64_t ring[96]  # per packet ahead: slot, table generation, expected draws
        cdef int64_t window = AHEAD_FIND
        cdef int64_t known
        cdef bint prefetch = self.flow_cache and not has_sport
        cdef Ctx ctx
        ctx.now = now
        ctx.obs = NULL
        ctx.oracle = NULL
        ctx.recording = False
        ctx.replay_only = False
        if has_proto:
            proto_v = proto
        if has_sport:
            sport_v = sport
        if v6:
            dst6 = dst
            addr6 = addr_out
            if has_src:
                src6 = src
        else:
            dst4 = dst
            addr4 = addr_out
            if has_src:
                src4 = src
        ahead.s_hi = s_hi
        ahead.s_lo = s_lo
        ahead.d_hi = 0
        ahead.iif = iif_mask
        for i in range(AHEAD_FIND):
            ring[64 + i] = 1  # the first packets are not looked at ahead: guess one draw each
        for i in range(n):
            if prefetch:
                self._prefetch_stage(i, n, ring, &window, dst4, dst6, src4, src6, dport_v, proto_v,
                                     has_src, has_proto, v6, origin, &ahead)
            if v6:
                d_hi = dst6[2 * i]
                d_lo = dst6[2 * i + 1]
                if has_src:
                    s_hi = src6[2 * i]
                    s_lo = src6[2 * i + 1]
            else:
                d_lo = dst4[i]
                if has_src:
                    s_lo = src4[i]
            if has_proto:
                pr = proto_v[i]
            if has_sport:
                sp = sport_v[i]
            self._init(&st, s_hi, s_lo, sp, d_hi, d_lo, dport_v[i], pr, iif_mask)
            known = -1
            if prefetch and i >= AHEAD_FIND and ring[32 + (i & 31)] == self.fc_gen:
                known = ring[i & 31]
            res = self._cached_run(&st, origin, &ctx, known, not v6)
            if res == R_DROP or res == R_REJECT:
                kind_v[i] = K_DROP if res == R_DROP else K_REJECT
                st.dnat = -1
                st.dport = 0
                st.masq = 0
            elif st.dnat >= 0:
                kind_v[i] = K_DNAT
            else:
                kind_v[i] = K_ACCEPT
                st.dport = 0
            if v6:
                addr6[2 * i] = self.addr_hi[st.dnat] if st.dnat >= 0 else 0
                addr6[2 * i + 1] = self.addr_lo[st.dnat] if st.dnat >= 0 else 0
            else:
                addr4[i] = <uint32_t>st.d_lo if st.dnat >= 0 else 0
            port_v[i] = <uint16_t>st.dport
            masq_v[i] = <uint8_t>st.masq
            rules_v[i] = <uint32_t>st.rules
