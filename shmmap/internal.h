/*
 * SPDX-License-Identifier: BSD-2-Clause
 * Copyright (c) 2026 the shmmap authors
 *
 * internal.h - the segment layout and the internal interfaces shared by the
 * library, the coordinator and the admin tool.  Nothing here is public API.
 *
 * Segment layout (every reference is an offset from the segment start, so
 * the segment is valid at any mapping address):
 *
 *   0            struct seg_header      one 4 KiB page: identity, geometry,
 *                                       offsets of the regions below
 *   slots_off    struct seg_slot[max_clients]          1664 B each
 *   dir_off      struct seg_mapdir[max_maps]           208 B each
 *   ctr_off      struct seg_counters[max_clients][max_maps]  56 B each,
 *                each client's rows from a cache line boundary
 *   classes_off  struct seg_class[SEG_NCLASSES]        64 B each
 *   pages_off    struct seg_page[npages]               32 B each
 *   heap_off     npages pages of SEG_PAGE bytes (64 KiB), aligned to SEG_PAGE
 *
 * The segment grows online (segment.c, "growth"): the regions above are
 * laid out for max_size (npages is the most pages it may ever have), and
 * only the first npages_live pages of the heap exist: the object is
 * heap_off + npages_live * SEG_PAGE bytes long (or longer, after a
 * coordinator died in a growth step).  Every process reserves max_size of
 * address space at the base, inaccessible past what it has made
 * accessible so far (struct seg: len), and extends that when the header
 * says the segment grew (shmmap__seg_sync).  Offsets stay valid: nothing
 * moves.
 *
 * The heap holds everything of variable size: each map's table (a run of
 * pages, see alloc.c: its lock stripes and its initial bucket array),
 * the bucket arrays a map grows into
 * (a run of pages each, see grow.c) and every entry (struct seg_entry, in
 * a size-class block or a run of pages).
 *
 * Who writes what:
 *   - header, directory: only the coordinator (maps are published with a
 *     release store of state after everything else is written);
 *   - slot i: the coordinator (state, pid, identity); the client in slot i
 *     writes its intent and undo records and its own counters row (and
 *     whoever repairs a dead client's stripe clears its undo records);
 *   - stripes, buckets, entries: whoever holds the stripe lock (stripe.lock);
 *   - classes and pages: whoever holds the class lock / the pool lock.
 *
 * Trust: a process validates every offset it reads from the segment against
 * its own mapped length (sm->len), never against a header field.
 */
#ifndef SHMMAP_INTERNAL_H
#define SHMMAP_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <pthread.h>
#include <sys/types.h>
#include <time.h>

#include "shmmap.h"

#define SHMMAP_EXPORT __attribute__((visibility("default")))

#define SEG_MAGIC 0x3150414d4d4853ULL /* "SHMMAP1\0" little-endian */
#define SEG_LAYOUT_VERSION 11u /* 11: slabs of up to SEG_SPAN_MAX pages for classes above 8 KiB (PAGE_SPAN); 10: entries' write times of 262 us in 29 bits, use count in bits 61..62; 9: directory entries 208 B with the get's words first, counter rows 56 B; 8: probation (ENT_KEPT, seg_probation in the header); 7: a page is due to its class's hand from an allocation count; 6: undo records in slots; 5: 24-byte entry header, expiry only if set; 4: entries name their map */
#define SEG_PAGE (64u * 1024u)      /* allocator page */
#define SEG_NCLASSES 78u            /* the size classes, 48 B .. SEG_PAGE (alloc.c) */
#define SEG_MIN_BLOCK 48u           /* the smallest class */
#define SEG_ALIGN 8u                /* every block (and entry) is 8-byte aligned */
#define SEG_MAX_SIZE_LIMIT (1ull << 40) /* 1 TiB: [segment] size and max_size */
#define SEG_MAX_CLIENTS_LIMIT 4096u
#define SEG_MAX_MAPS_LIMIT 4096u
#define SEG_CHAIN_MAX (1u << 20)    /* a longer chain is corrupt (a cycle) */

#define SEG_CLEAN 1u
#define SEG_DIRTY 2u

/* Slot states. */
#define SLOT_FREE 0u
#define SLOT_LIVE 1u
#define SLOT_DEAD 2u /* client gone, recovery pending */

/* What a put does when memory is full. */
#define MAP_POLICY_EVICT 0u  /* a full segment evicts its unused entries (evict.c) */
#define MAP_POLICY_REJECT 1u /* fail with -ENOSPC, lose nothing */

/* Map directory states. */
#define MAP_FREE 0u
#define MAP_LIVE 1u
#define MAP_INIT 2u /* being created or dropped by the coordinator */

/* Lock word: 0 = free, else owner slot + 1 in the low bits, plus a waiters bit. */
#define LOCK_WAITERS 0x80000000u
#define LOCK_OWNER_MASK 0x7fffffffu
/* Owner id used by the coordinator itself (never a slot). */
#define LOCK_OWNER_COORD 0x7ffffff0u



/* A class's probation state (evict.c), in the header's page (which has
 * room for it, where a larger seg_class would cost small segments a heap
 * page): the probation hand, checkpoints of the class's allocs - the time
 * when it passed each of the last CLASS_MARKS marks, a ring written under
 * the class lock -, the age of the probation hand's last victim and when,
 * and when a handover last found no page of the class to take.  All
 * written without a lock (but the ring) and read as hints. */
#define CLASS_MARKS 3u
struct seg_probation {
	_Atomic uint64_t probe;     /* HAND(page, block) of the probation hand */
	_Atomic uint32_t mark_head; /* the newest checkpoint */
	_Atomic uint32_t age;       /* itime age of the last entry the probation hand evicted */
	_Atomic uint32_t mark_n[CLASS_MARKS]; /* allocs at a checkpoint */
	_Atomic uint32_t mark_t[CLASS_MARKS]; /* shmmap__itime() then */
	_Atomic uint32_t refused_t; /* shmmap__itime() + 1 when a handover found no page to give */
	_Atomic uint32_t evict_t;   /* shmmap__itime() | 1 of that eviction, 0: none yet */
};
_Static_assert(sizeof(struct seg_probation) == 48, "probation");

struct seg_header {
	uint64_t magic;            /*   0 */
	uint32_t layout_version;   /*   8 */
	uint32_t header_size;      /*  12 */
	uint64_t size;             /*  16: the initial size (it grows: npages_live) */
	uint64_t base;             /*  24: agreed mapping address */
	uint64_t hash_seed;        /*  32 */
	uint64_t created_ns;       /*  40: CLOCK_REALTIME */
	_Atomic uint32_t state;    /*  48: SEG_CLEAN / SEG_DIRTY */
	uint32_t max_clients;      /*  52 */
	uint32_t max_maps;         /*  56 */
	uint32_t npages;           /*  60: page descriptors: the most pages (max_size) */
	uint64_t slots_off;        /*  64 */
	uint64_t dir_off;          /*  72 */
	uint64_t ctr_off;          /*  80 */
	uint64_t classes_off;      /*  88 */
	uint64_t pages_off;        /*  96 */
	uint64_t heap_off;         /* 104 */
	_Atomic uint32_t coord_pid;/* 112 */
	uint32_t nclasses;         /* 116 */
	_Atomic uint64_t coord_gen;/* 120: bumped by every coordinator start */
	_Alignas(64) _Atomic uint32_t pool_lock; /* 128: guards pages[] runs */
	uint32_t pool_rover;       /* 132: next page to scan from */
	uint64_t pool_free;        /* 136: free pages (under pool_lock) */
	_Atomic uint64_t recoveries; /* 144: dead clients recovered (coordinator) */
	_Atomic uint64_t sweeps;     /* 152: allocator sweeps (coordinator) */
	_Atomic uint64_t coord_start;/* 160: the coordinator's start time (pid reuse) */
	/* 168: futex word: a writer saw a map over its load factor and woke
	 * the coordinator's growth thread (the one word clients write here). */
	_Atomic uint32_t grow_wake;
	/* 172: a window of pages the coordinator is emptying for a run of its
	 * own (a map's table, evict.c): first page + 1 (0: none), pages, and
	 * when it was set (shmmap__mono_ms, low 32 bits).  A client's
	 * allocation from the pool passes these pages over for POOL_HOLD_MS
	 * at most (a coordinator killed meanwhile holds nothing for long). */
	_Atomic uint32_t pool_hold;
	_Atomic uint32_t pool_hold_n;
	_Atomic uint32_t pool_hold_t;
	/* Read-mostly line (read on every growth check, written by growth only): */
	_Alignas(64) uint64_t max_size;     /* 192: the most it may grow to (the layout's size) */
	_Atomic uint32_t npages_live;       /* 200: heap pages that exist now (release store) */
	_Atomic uint32_t grow_state;        /* 204: SEG_GROW_* */
	_Atomic uint64_t grow_steps;        /* 208: growth steps done (coordinator) */
	_Atomic uint32_t evict_rover;       /* 216: next page a large entry's eviction looks at */
	_Atomic uint32_t sweeping;          /* 220: a sweep runs: no spare moves (sweep.c) */
	_Atomic uint64_t handovers;         /* 224: pages handed to a size class (from another, or a run) */
	uint32_t flags;                     /* 232: SEG_F_*, set at creation (0 in older segments) */
	_Atomic uint64_t moves;             /* 240: entries moved out of pages being emptied */
	/* 256: each class's probation state (evict.c): written by evicting
	 * clients and the allocator, not only the coordinator. */
	_Alignas(64) struct seg_probation prob[SEG_NCLASSES];
	/* 4000: the hand over runs of pages (entries larger than a page),
	 * which give their pages to a size class when older than its own
	 * victims (evict.c run_donor): the page it looks at next, and
	 * shmmap__itime() + 1 when it last found none to give (0: never).
	 * Hints, written by evicting clients; zero in older segments. */
	_Atomic uint32_t run_hand;
	_Atomic uint32_t run_refused_t;
	/* 4008: the coordinator's snapshots (persist.c), for shmmapctl status
	 * and metrics: when the last save succeeded (CLOCK_REALTIME ms, 0:
	 * never) and how many entries it wrote, when the last one failed and
	 * how many have failed.  Written by the coordinator only, read by
	 * anyone: figures to show, never trusted for anything else. */
	_Atomic uint64_t save_ok_ms;
	_Atomic uint64_t save_entries;
	_Atomic uint64_t save_fail_ms;
	_Atomic uint64_t save_failures;
	uint8_t pad[4096 - 4040];
};
_Static_assert(sizeof(struct seg_header) == 4096, "header is one page");
_Static_assert(offsetof(struct seg_header, state) == 48, "layout");
_Static_assert(offsetof(struct seg_header, slots_off) == 64, "layout");
_Static_assert(offsetof(struct seg_header, heap_off) == 104, "layout");
_Static_assert(offsetof(struct seg_header, pool_lock) == 128, "layout");
_Static_assert(offsetof(struct seg_header, max_size) == 192, "layout");
_Static_assert(offsetof(struct seg_header, npages_live) == 200, "layout");
_Static_assert(offsetof(struct seg_header, moves) == 240, "layout");
_Static_assert(offsetof(struct seg_header, pool_hold) == 172, "layout");
_Static_assert(offsetof(struct seg_header, pool_hold_t) == 180, "layout");
_Static_assert(offsetof(struct seg_header, prob) == 256, "layout");
_Static_assert(offsetof(struct seg_header, run_hand) == 4000, "layout");
_Static_assert(offsetof(struct seg_header, save_ok_ms) == 4008, "layout");
/* flags: */
#define SEG_F_HUGE 1u /* every process advises its mapping for transparent huge pages */
/* grow_state: */
#define SEG_GROW_OK 0u     /* may grow (if below max_size) */
#define SEG_GROW_NOROOM 1u /* the last step found no room in /dev/shm: clients do not ask */

/*
 * An intent record: the blocks one writing thread owns while they are not
 * reachable from a chain, so that recovery can tell what a dead writer
 * allocated but never linked, and what it unlinked but never freed.
 *   a  set by the allocator, under the class (or pool) lock, to the block
 *      it hands out; cleared by the writer right after linking the block
 *      (still under the stripe lock), or by the free of it.
 *   b  set by the writer, under the stripe lock, before the store that
 *      unlinks the entry; cleared by the free of it, under the class lock.
 * So, for a writer that holds no stripe lock, a and b are blocks no chain
 * reaches and nobody else may free; for one that dies holding a stripe
 * lock, whoever takes the lock over decides (stripe_repair: reachable
 * means the store happened).  A free with a record frees only if the record
 * still names the block, and clears it in the same critical section: a
 * block is freed once, whoever frees it (the writer, a lock taker, the
 * coordinator).  map and stripe say where a and b belong.
 *   spare  a block the slot keeps for its next write (an allocator cache
 *      of one block per record): the block a write took out of a chain,
 *      kept instead of freed, and used by the next write that needs a
 *      block of its size class, with no allocator lock either way.  It is
 *      allocated and no chain reaches it; moved to a (or from b) by storing
 *      the destination first, so for an instant two fields may name the
 *      same block: whoever frees a record's blocks frees spare only if a
 *      and b do not name it too (recovery, sweep, check know).  Readers
 *      of the record read b, then spare, then a: each move stores its
 *      destination before it clears its source, so no block is missed.
 *      A move takes no allocator lock, so the sweep, which must see every
 *      block in flight, stops moves while it runs (seg_header.sweeping,
 *      seg_slot.spare_moving: table.c spare_move_begin).
 */
struct seg_intent {
	_Atomic uint64_t a;
	_Atomic uint64_t b;
	_Atomic uint32_t map;
	_Atomic uint32_t stripe;
	_Atomic uint64_t spare;
};
_Static_assert(sizeof(struct seg_intent) == 32, "intent record");
/* Intent records per slot: the writing threads of one attachment at once. */
#define SEG_INTENTS 16u

/*
 * An undo record, one for each of the first SEG_UNDOS intent records of a
 * slot (records are claimed lowest first: a process writing from up to
 * SEG_UNDOS threads at once has one for each): a rewrite in place (table.c,
 * rewrite) of a value of at most SEG_UNDO_MAX bytes in the block its entry
 * already has.  Written by the record's thread under the entry's stripe
 * lock, in this order: map, stripe, vlenf, expire_ms and the old value,
 * then off (release) names the entry; then, inside one seq change, the
 * expiry, the value and vlenf are rewritten and off is cleared (release):
 * the commit point.  So a set off means the writer holds that stripe lock,
 * or died holding it, and no reader has seen the new value (the seq stayed
 * odd from the first changed byte): whoever takes the lock over
 * (stripe_repair) puts the old value, length and expiry back and clears
 * off.  A writer that died after the commit leaves the whole new value,
 * which stays: a rewrite is all or nothing, and what readers saw is never
 * taken back.  The entry's key, klen, map and whether it has an expiry
 * slot never change in place.
 */
#define SEG_UNDOS 4u
#define SEG_UNDO_MAX 224u
struct seg_undo {
	_Atomic uint64_t off;  /* the entry being rewritten, 0 = none */
	uint32_t map, stripe;  /* where it is linked */
	uint32_t vlenf;        /* its vlenf before the rewrite */
	uint32_t pad;
	uint64_t expire_ms;    /* its expiry before, if vlenf has ENT_F_EXPIRE */
	unsigned char val[SEG_UNDO_MAX]; /* its value before (vlenf's length) */
};
_Static_assert(sizeof(struct seg_undo) == 256, "undo record");

struct seg_slot {
	_Atomic uint32_t state;   /*  0: SLOT_* */
	uint32_t pid;             /*  4: in the coordinator's pid namespace */
	uint64_t start_time;      /*  8: /proc/PID/stat starttime (pid reuse) */
	_Atomic uint64_t gen;     /* 16: bumped at every assignment */
	uint32_t uid;             /* 24 */
	uint32_t flags;           /* 28: SLOT_F_* */
	uint64_t attached_ns;     /* 32 */
	/* While recovery of a DEAD slot waits for a lock a live process holds
	 * (written by the coordinator, shown by shmmapctl): */
	uint32_t wait_kind;       /* 40: SLOT_WAIT_* */
	uint32_t wait_owner;      /* 44: the holder's lock owner id (slot + 1), 0 unknown */
	uint32_t wait_map;        /* 48: SLOT_WAIT_STRIPE: map index */
	uint32_t wait_stripe;     /* 52: SLOT_WAIT_STRIPE: stripe index */
	uint64_t dead_ns;         /* 56: when the coordinator found it gone */
	/* 64: record k's thread is moving a block between its spare and a or
	 * b (written by that thread only; the sweep waits for 0, sweep.c). */
	_Atomic uint8_t spare_moving[SEG_INTENTS];
	uint8_t pad[128 - 64 - SEG_INTENTS];
	struct seg_intent intent[SEG_INTENTS]; /* 128 */
	struct seg_undo undo[SEG_UNDOS];       /* 640: undo[k] is intent[k]'s */
};
_Static_assert(sizeof(struct seg_slot) == 128 + 32 * SEG_INTENTS + 256 * SEG_UNDOS, "slot size");

#define SLOT_F_RDONLY 0x1u
#define SLOT_WAIT_NONE 0u
#define SLOT_WAIT_STRIPE 1u /* a stripe lock */
#define SLOT_WAIT_ALLOC 2u  /* an allocator (class or pool) lock */

/*
 * A bucket array of a map (see grow.c): nbuckets offsets of chain heads.
 * run: first page + 1 of the run of pages that holds it, 0 if it is the
 * initial array inside the table run.  Written by the coordinator only
 * while the map's table word does not name it.
 */
struct seg_array {
	uint64_t off;
	uint32_t nbuckets;
	uint32_t run;
};
_Static_assert(sizeof(struct seg_array) == 16, "array descriptor");

/* The table word of a map (seg_mapdir.tbl): which array is current and
 * whether a resize from the other one is under way, plus a generation
 * that moves at every change (readers compare it before and after). */
#define TBL_GROWING 0x1u        /* arr[!cur] is the old array, being moved */
#define TBL_CUR(w) ((uint32_t)((w) >> 1) & 1u)
#define TBL_GEN_ONE (UINT64_C(1) << 32)
/* An old bucket whose entries all moved to the new array. */
#define BUCKET_MOVED UINT64_C(1)

/*
 * A map directory entry, 208 bytes (entries start 0, 16, 32 or 48 bytes
 * into a cache line): what every get reads (state, gen, the table word and
 * the arrays) comes first, in the entry's first 48 bytes, and clock_hand,
 * written by every eviction of a map with a quota, at 112, on another line
 * than those words of this entry and of the next (the other words written
 * at run time change once per resize or drop).
 */
struct seg_mapdir {
	_Atomic uint32_t state;        /*   0: MAP_* */
	_Atomic uint32_t gen;          /*   4: bumped at every create and drop */
	_Atomic uint64_t tbl;          /*   8: table word: TBL_*, written by the coordinator */
	struct seg_array arr[2];       /*  16: the current array, and the old or retired one */
	char name[SHMMAP_NAME_MAX + 1];/*  48 */
	_Atomic uint32_t clock_hand;   /* 112: next bucket a quota's eviction looks at */
	uint32_t policy;               /* 116: MAP_POLICY_* */
	uint64_t buckets_off;          /* 120: the initial uint64_t[nbuckets] */
	uint64_t stripes_off;          /* 128: struct seg_stripe[nstripes] */
	uint64_t table_pages;          /* 136: first page index of the table run */
	uint32_t nbuckets;             /* 144: initial buckets, power of two */
	uint32_t nstripes;             /* 148: power of two, <= nbuckets */
	uint32_t key_max;              /* 152 */
	uint32_t val_max;              /* 156 */
	uint64_t created_ns;           /* 160 */
	uint32_t max_buckets;          /* 168: growth stops here (power of two) */
	uint32_t pad1;                 /* 172 */
	_Atomic uint64_t resizes;      /* 176: resizes finished */
	uint64_t quota;                /* 184: bytes of entries (headers, keys, values), 0 = none */
	uint32_t default_ttl;          /* 192: seconds for writes with ttl 0, 0 = none */
	_Atomic uint32_t dropping;     /* 196: MAP_INIT because a drop is under way */
	uint64_t dropped_ns;           /* 200: when the last map here was dropped */
};
_Static_assert(sizeof(struct seg_mapdir) == 208, "directory entry");
_Static_assert(offsetof(struct seg_mapdir, state) == 0 && offsetof(struct seg_mapdir, gen) == 4 &&
		       offsetof(struct seg_mapdir, tbl) == 8 && offsetof(struct seg_mapdir, arr) == 16 &&
		       offsetof(struct seg_mapdir, name) == 48 &&
		       offsetof(struct seg_mapdir, clock_hand) == 112 &&
		       offsetof(struct seg_mapdir, quota) == 184,
	       "layout");

/*
 * One lock stripe, two cache lines of its own: the first holds what
 * readers touch (seq) and what every write changes; the second the count
 * of expiry slots, changed only by writes of entries with an expiry.
 * lock guards every bucket b with (b & (nstripes - 1)) == this stripe's
 * index, the entries chained from them, and the totals below.  seq is the seqlock counter: odd
 * while a writer is changing the chains.  A stripe guards the same hash
 * values in every bucket array of its map (b & (nstripes - 1) is the hash's
 * low bits, and nstripes <= nbuckets), so a bucket moves between arrays
 * under its one stripe lock; move_bucket and moving record a move in
 * progress for whoever takes a dead mover's lock over (grow.c).
 */
struct seg_stripe {
	_Atomic uint32_t lock;
	_Atomic uint32_t seq;
	uint64_t entries;   /* under lock */
	uint64_t bytes;     /* key + value bytes, under lock */
	_Atomic uint64_t lock_waits;
	uint64_t evictions;   /* under lock */
	uint64_t expirations; /* under lock: expired entries unlinked */
	_Atomic uint64_t moving;  /* under lock: entry in flight between the arrays */
	uint32_t move_bucket;     /* under lock: old bucket being moved + 1, 0 = none */
	uint32_t move_next;       /* under lock: this stripe's old buckets moved in order */
	/* 64: the second line */
	uint64_t slots;     /* under lock: entries with an expiry slot (ENT_F_EXPIRE) */
	uint64_t pad[7];
};
_Static_assert(offsetof(struct seg_stripe, slots) == 64, "slots on the second line");
_Static_assert(sizeof(struct seg_stripe) == 128, "stripe is two cache lines");

/* A writer's seq change, under the stripe lock: odd from seq_begin to
 * seq_end, and a lock-free reader that saw it odd or changed throws what it
 * read away (table.c, getfast.h). */
static inline void seq_begin(struct seg_stripe *st)
{
	uint32_t q = atomic_load_explicit(&st->seq, memory_order_relaxed);
	atomic_store_explicit(&st->seq, q + 1, memory_order_relaxed);
	/* Orders the odd seq before the changes below (pairs with the
	 * reader's acquire fence before it reloads seq). */
	atomic_thread_fence(memory_order_release);
}

static inline void seq_end(struct seg_stripe *st)
{
	uint32_t q = atomic_load_explicit(&st->seq, memory_order_relaxed);
	/* Release: the changes are visible to whoever reads the even seq. */
	atomic_store_explicit(&st->seq, q + 1, memory_order_release);
}

/* Per (client slot, map) counters: written only by that client. */
struct seg_counters {
	_Atomic uint64_t hits, misses, puts, dels, incrs, expired, cas;
};
/* Not padded to a cache line: a slot's rows are contiguous and have one
 * writer, and each slot's rows start on a line of their own
 * (seg_ctr_stride). */
_Static_assert(sizeof(struct seg_counters) == 56, "counters row");

/*
 * An entry: a 24-byte header, then (only if it expires) its expiry, then
 * the key bytes, then the value bytes:
 *
 *    0  next     offset of the next entry in the chain, 0 = end
 *    8  meta     hash | itime << 32 | count << 61 | ENT_KEPT (ENT_* macros below)
 *   16  klen     u16, at least 1
 *   18  map      u16, map directory index
 *   20  vlenf    u32: value length (at most 2^30) | ENT_F_EXPIRE
 *   24  [expire_ms u64, CLOCK_REALTIME ms, present iff ENT_F_EXPIRE]
 *   24 or 32: key, then value
 *
 * Most cache entries never expire: they pay no expiry slot.  map names
 * the map whose chains hold it, so that eviction can take the entries of
 * any block or page (evict.c).  meta holds the key's hash (low 32 bits:
 * enough for 2^30 buckets), when the entry was written (29 bits of
 * shmmap__itime(), units of 262 us: ages up to 19.5 hours, ENT_AGE), its
 * use count (bits 61..62, 0..3: raised by gets, lowered by the evicting
 * hand) and ENT_KEPT (the top bit: past probation, evict.c).  The count
 * and the bit are changed by a compare-and-swap of the whole word against the value the changer
 * validated (or, under the stripe lock, by a rewrite in place's store of
 * the word it loaded): a reader that comes late, after the block was freed and
 * reused, changes nothing (the word no longer matches).
 *
 * Once an entry is reachable, klen, map, the key and vlenf's flag never
 * change.  meta's count and next change as said; the value, its length
 * and the expiry change only in place under the stripe lock and inside a
 * seq change, with an undo record (struct seg_undo), and the entry needs
 * the same size class (a rewrite of another size makes a new entry).  A
 * reader that races a writer may still see any
 * bytes (a block freed and reused): it loads vlenf ONCE, masks the flag
 * off, validates lengths and bounds with that copy (ent_size with the
 * flag: the expiry slot is bounds-checked too) and passes the same copy
 * to the accessors below, never re-reading the word.
 */
struct seg_entry {
	_Atomic uint64_t next; /* offset of the next entry in the chain, 0 = end */
	_Atomic uint64_t meta; /* hash | itime << 32 (29 bits) | count << 61 | ENT_KEPT (bit 63) */
	uint16_t klen;
	uint16_t map;          /* map directory index */
	uint32_t vlenf;        /* value length | ENT_F_EXPIRE: use ent_vlen() */
	unsigned char data[];  /* [expire_ms], key, value: use the accessors */
};
_Static_assert(offsetof(struct seg_entry, next) == 0, "entry header");
_Static_assert(offsetof(struct seg_entry, meta) == 8, "entry header");
_Static_assert(offsetof(struct seg_entry, klen) == 16, "entry header");
_Static_assert(offsetof(struct seg_entry, map) == 18, "entry header");
_Static_assert(offsetof(struct seg_entry, vlenf) == 20, "entry header");
_Static_assert(sizeof(struct seg_entry) == 24, "entry header");
#define ENT_HDR ((uint32_t)sizeof(struct seg_entry)) /* without the expiry slot */
#define ENT_EXP_BYTES 8u                             /* the expiry slot */
#define ENT_F_EXPIRE (UINT32_C(1) << 31)             /* vlenf: an expiry slot follows the header */
#define ENT_VLEN_MASK (ENT_F_EXPIRE - 1)
_Static_assert(ENT_VLEN_MASK >= (UINT32_C(1) << 30), "a value of 1 GiB fits beside the flag");
_Static_assert(sizeof(struct seg_entry) % SEG_ALIGN == 0 && ENT_EXP_BYTES % SEG_ALIGN == 0,
	       "the expiry slot is 8-byte aligned");
#define ENT_HASH(m) ((uint32_t)(m))
#define ITIME_BITS 29u
#define ITIME_MASK ((UINT32_C(1) << ITIME_BITS) - 1)
#define ENT_ITIME(m) ((uint32_t)((m) >> 32) & ITIME_MASK)
#define ENT_FREQ(m) ((uint32_t)((m) >> 61) & 3u)
/* Kept: found used by a hand, so past probation: the probation hand
 * passes it over from then on (evict.c); set under the stripe lock, never
 * by a reader. */
#define ENT_KEPT (UINT64_C(1) << 63)
/* What a rewritten key carries over to its new entry: its count and bit. */
#define ENT_USE (UINT64_C(3) << 61 | ENT_KEPT)
#define ENT_FREQ_ONE (UINT64_C(1) << 61)
#define ENT_FREQ_MAX 3u
#define ENT_META(hash, itime, freq) \
	((uint64_t)(uint32_t)(hash) | (uint64_t)((itime)&ITIME_MASK) << 32 | (uint64_t)(freq) << 61)
/* The age, in itime units, at now of an entry written at itime (29 bits,
 * wrapping): 0 if written after now (by another process, since the caller
 * read its clock); right for ages under 19.5 hours, half the range (an
 * older one reads as some younger age, or 0: ages are hints only). */
#define ENT_AGE(now, itime) ent_age((uint32_t)(now), (uint32_t)(itime))
static inline uint32_t ent_age(uint32_t now, uint32_t itime)
{
	uint32_t d = (now - itime) & ITIME_MASK;
	return d > ITIME_MASK / 2 ? 0 : d;
}

/* Entry e was read (a get's hit, an incr): its use count, for the evicting
 * hand (evict.c), is raised from m, the header word the caller read (and
 * validated), by a CAS against it, only while below the top: so a hot
 * entry's line is not written on every read, and a block freed and reused
 * since is left alone. */
static inline __attribute__((always_inline)) void ent_mark_used(const struct seg_entry *e,
								 uint64_t m)
{
	if (ENT_FREQ(m) < ENT_FREQ_MAX)
		atomic_compare_exchange_strong_explicit(&((struct seg_entry *)e)->meta, &m,
							m + ENT_FREQ_ONE, memory_order_relaxed,
							memory_order_relaxed);
}

/* Entry accessors.  vlenf is the caller's one copy of the word (ent_vlenf),
 * validated by the caller against the block and the map's limits. */

/* The vlenf word, one relaxed load (it may race a reuse of the block). */
static inline uint32_t ent_vlenf(const struct seg_entry *e)
{
	return __atomic_load_n(&e->vlenf, __ATOMIC_RELAXED);
}

static inline uint32_t ent_vlen(uint32_t vlenf)
{
	return vlenf & ENT_VLEN_MASK;
}

static inline bool ent_has_expiry(uint32_t vlenf)
{
	return (vlenf & ENT_F_EXPIRE) != 0;
}

/* Bytes before the key: 24, or 32 with the expiry slot. */
static inline uint32_t ent_hdr_size(uint32_t vlenf)
{
	return ENT_HDR + (ent_has_expiry(vlenf) ? ENT_EXP_BYTES : 0);
}

/* Bytes an entry takes: header, expiry slot if any, key and value. */
static inline uint64_t ent_size(uint64_t klen, uint64_t vlen, bool has_expiry)
{
	return ENT_HDR + (has_expiry ? ENT_EXP_BYTES : 0) + klen + vlen;
}

static inline const unsigned char *ent_key(const struct seg_entry *e, uint32_t vlenf)
{
	return (const unsigned char *)e + ent_hdr_size(vlenf);
}

static inline const unsigned char *ent_val(const struct seg_entry *e, uint32_t klen,
					   uint32_t vlenf)
{
	return ent_key(e, vlenf) + klen;
}

/* When the entry expires (CLOCK_REALTIME ms), 0 = never. */
static inline uint64_t ent_expiry(const struct seg_entry *e, uint32_t vlenf)
{
	if (!ent_has_expiry(vlenf))
		return 0;
	/* 8-byte aligned (the entry is, and the header is 24 bytes). */
	return __atomic_load_n((const uint64_t *)(const void *)e->data, __ATOMIC_RELAXED);
}

/* The expiry of an entry that has the slot, rewritten in place (under its
 * stripe lock, inside a seq change: table.c, rewrite). */
static inline void ent_set_expiry(struct seg_entry *e, uint64_t expire_ms)
{
	__atomic_store_n((uint64_t *)(void *)e->data, expire_ms, __ATOMIC_RELAXED);
}

/* Write the header of a block not yet reachable (but for next and meta:
 * the caller sets those) and its expiry slot when expire_ms is not 0;
 * returns where the key goes.  The block must hold
 * ent_size(klen, vlen, expire_ms != 0) bytes.  Relaxed atomic stores, as
 * the lock-free readers load these words: a stale reader of a block freed
 * and reused may read them meanwhile (and throws what it read away). */
static inline unsigned char *ent_init(struct seg_entry *e, uint32_t klen, uint32_t map,
				      uint32_t vlen, uint64_t expire_ms)
{
	__atomic_store_n(&e->klen, (uint16_t)klen, __ATOMIC_RELAXED);
	__atomic_store_n(&e->map, (uint16_t)map, __ATOMIC_RELAXED);
	__atomic_store_n(&e->vlenf, (vlen & ENT_VLEN_MASK) | (expire_ms ? ENT_F_EXPIRE : 0),
			 __ATOMIC_RELAXED);
	if (!expire_ms)
		return e->data;
	ent_set_expiry(e, expire_ms);
	return e->data + ENT_EXP_BYTES;
}

/* A size class: a partial-slab list guarded by its own lock, and the
 * state of its evicting hands (evict.c; written without the lock, read as
 * hints: every value is checked before use). */
struct seg_class {
	_Atomic uint32_t lock;
	uint32_t size;      /* block size, multiple of SEG_ALIGN */
	uint32_t partial;   /* first page with a free block: index + 1, 0 = none */
	uint32_t allocs;    /* blocks handed out, wrapping: the class's clock (seg_page.due) */
	uint64_t used;      /* blocks in use */
	uint64_t pages;     /* pages owned */
	_Atomic uint64_t hand;      /* HAND(page, block): the next block the hand looks at */
	/* Age (itime units) of the last entry a hand evicted (a probation
	 * victim's times PROBATION_DIV, evict.c): */
	_Atomic uint32_t age;
	_Atomic uint32_t evict_t;   /* shmmap__itime() of that eviction (or of the class's first page) */
	_Atomic uint64_t evictions; /* entries the hands evicted */
	_Atomic uint64_t pages_in;  /* pages handed over to this class */
};
_Static_assert(sizeof(struct seg_class) == 64, "class line");

#define HAND(page, blk) (((uint64_t)(page) + 1) << 16 | (blk))
#define HAND_PAGE(h) ((uint32_t)((h) >> 16) - 1u)
#define HAND_BLK(h) ((uint32_t)((h)&0xffffu))

/* Page descriptor.  kind: */
#define PAGE_FREE 0u
#define PAGE_SLAB 1u  /* blocks of class `cls` */
#define PAGE_RUN 2u   /* head of a run of `run` pages (large block or table) */
#define PAGE_CONT 3u  /* continuation of a run */
/* A page of a slab of several pages after its first (a class above 8 KiB
 * whose blocks straddle pages, alloc.c): `run` is how many pages back its
 * head, the PAGE_SLAB page that describes the whole slab, lies (1 ..
 * SEG_SPAN_MAX - 1).  Every other field is 0. */
#define PAGE_SPAN 4u
#define SEG_SPAN_MAX 8u /* pages in a slab, at most */
struct seg_page {
	uint16_t kind;
	uint16_t cls;     /* PAGE_SLAB: class index */
	/* PAGE_SLAB: the class's allocs from which its hand may look at the
	 * page's blocks (evict.c): set when the class takes the page, a hint. */
	uint32_t due;
	union {
		uint32_t run;   /* PAGE_RUN: pages in the run; PAGE_SPAN: pages back to
				   its head; PAGE_FREE: unused */
		uint32_t drain; /* PAGE_SLAB: lock owner id of whoever empties it for another
				   class (evict.c), 0 = none: off the partial list meanwhile */
	};
	/* PAGE_SLAB: these describe the whole slab (its class's pages, from
	 * this one, shmmap__class_pages): */
	uint32_t used;    /* PAGE_SLAB: blocks in use */
	uint32_t carved;  /* PAGE_SLAB: blocks ever handed out (rest implicitly free) */
	uint32_t free;    /* PAGE_SLAB: first free block offset in the slab + 1, 0 = none */
	uint32_t prev, next; /* PAGE_SLAB partial list: page index + 1 */
};
_Static_assert(sizeof(struct seg_page) == 32, "page desc");

struct seg_geom;
/* A mapped segment, as one process sees it.  base .. base + reserved is
 * this process's (a PROT_NONE mapping of the object past len); len only
 * grows, by shmmap__seg_sync, from any thread (release store). */
struct seg {
	unsigned char *base;  /* where it is mapped here */
	_Atomic size_t len;   /* bytes accessible here: the bound for every offset */
	size_t reserved;      /* address space reserved at base: max_size */
	int fd;
	bool rdonly;
	bool at_agreed_base;
	struct seg_geom *geom;/* set by create, open_existing, attach: its npages follows len */
	/* Called by the allocator when the heap has no room, before it gives
	 * up: ask the coordinator to grow the segment by at least `need`
	 * contiguous pages (seen: the live pages this process saw).  Returns 0
	 * if the segment grew (or had grown meanwhile), else a negative errno.
	 * NULL: no growth on demand. */
	int (*grow)(const struct seg *s, uint32_t seen, uint32_t need);
};

static inline struct seg_header *seg_hdr(const struct seg *s)
{
	return (struct seg_header *)s->base;
}

bool shmmap__seg_ok_slow(const struct seg *s, uint64_t off, uint64_t n, uint64_t align);

/* Is [off, off + n) inside the mapping and off aligned to `align`?  Exact
 * against what this process has mapped; if it is not, and the segment has
 * grown since (the slow path), the mapping is extended and checked again. */
static inline __attribute__((always_inline)) bool seg_ok(const struct seg *s, uint64_t off,
							   uint64_t n, uint64_t align)
{
	size_t len = atomic_load_explicit(&s->len, memory_order_acquire);
	if (__builtin_expect(off != 0 && off < len && n <= len - off && (off & (align - 1)) == 0, 1))
		return true;
	return shmmap__seg_ok_slow(s, off, n, align);
}

static inline void *seg_ptr(const struct seg *s, uint64_t off)
{
	return s->base + off;
}

/* Validated geometry of the segment, computed once per attachment from the
 * header and checked against the mapped length. */
struct seg_geom {
	/* npages: the pages this process may use, <= the header's npages_live
	 * (and mapped here); grown by shmmap__seg_sync.  npages_max: the
	 * layout's (page descriptors). */
	uint32_t max_clients, max_maps;
	_Atomic uint32_t npages;
	uint32_t nclasses, npages_max;
	uint64_t max_size;
	uint64_t slots_off, dir_off, ctr_off, classes_off, pages_off, heap_off;
	uint64_t hash_seed;
};

/* ---- segment.c ---- */
struct lock_ctx;
struct seg_params {
	uint64_t size;     /* initial size */
	uint64_t max_size; /* the most it may grow to; 0: size */
	uint64_t base;
	uint32_t max_clients;
	uint32_t max_maps;
	bool huge_pages; /* SEG_F_HUGE: ask for transparent huge pages */
};
int shmmap__seg_layout(const struct seg_params *p, struct seg_geom *g);
int shmmap__seg_create(const char *name, unsigned mode, const struct seg_params *p,
		       struct seg *s, struct seg_geom *g);
/* Is the object called name a valid segment (of this layout version)?
 * Then 0, with its size, max_size, max_clients and max_maps in *found
 * (for a message that says which differ from a configuration's); else
 * -errno, -SHMMAP_EBADSEG or -SHMMAP_EVERSION. */
int shmmap__seg_peek(const char *name, struct seg_params *found);
int shmmap__seg_open_existing(const char *name, const struct seg_params *p,
			      struct seg *s, struct seg_geom *g);
int shmmap__seg_map_fd(int fd, uint64_t base, bool rdonly, struct seg *s);
/* Check the header and compute *g; make the live size accessible.  The
 * caller then sets s->geom = g (a geometry that outlives the mapping) for
 * shmmap__seg_sync to follow growth. */
int shmmap__seg_validate(struct seg *s, struct seg_geom *g);
void shmmap__seg_unmap(struct seg *s);
/*
 * Follow the header's npages_live: extend this process's mapping (and
 * s->geom->npages) to it.  Any thread, lock-free (mprotect of a range of
 * our own reservation is idempotent; len and npages only grow).  Returns
 * 0, or -SHMMAP_ESEGSIZE if the header names a size this process cannot
 * map (beyond its reservation or the object's length): nothing changes.
 */
int shmmap__seg_sync(const struct seg *s);
/* The header's npages_live, clamped to the layout. */
uint32_t shmmap__seg_live(const struct seg *s, const struct seg_geom *g);
/* Bytes the segment has now: heap_off + npages_live pages. */
uint64_t shmmap__seg_cur_size(const struct seg *s, const struct seg_geom *g);
/*
 * One growth step, coordinator only (one caller at a time): extend the
 * object to `pages` heap pages (posix_fallocate of the new range: the
 * memory is committed now), make them accessible here, then give them to
 * the pool and publish npages_live (release).  With huge pages, the new
 * range's whole 2 MiB blocks are collapsed for up to collapse_ms first (0:
 * none; segment.c), stopping early once *yield (if not NULL) is non-zero
 * (someone waits for the step).  Returns 0, -ENOSPC (no room
 * in the file system: nothing published), -EBUSY/-EAGAIN (the pool lock:
 * try again), -EINVAL (pages beyond the layout).  A crash at any point
 * leaves a consistent segment at the old or the new size.
 */
int shmmap__seg_grow(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
		     uint32_t pages, unsigned collapse_ms, const _Atomic uint32_t *yield);
uint64_t shmmap__now_ms(void);
/* CLOCK_MONOTONIC in ms. */
uint64_t shmmap__mono_ms(void);
/* When entries are written and evicted, for the eviction policy:
 * CLOCK_MONOTONIC in units of 2^ITIME_SHIFT ns (262 us), wrapping (seg_
 * entry.meta keeps 29 bits: ENT_AGE, right up to 19.5 hours, about the
 * 18.6 hours of the 24 bits of 4 ms ticks before).  Fine, because a cache
 * may turn over within milliseconds (10,000 puts in 20 ms), where the 4 ms
 * ticks of the coarse clock, used before, told none of its entries apart
 * (evict.c).  (Units of 65.5 us, tried first, kept ages right for 4.9
 * hours only; 262 us cost the 100 B trace's hit ratio at 1% 0.003.)
 * shmmap__itime_coarse is the same from CLOCK_MONOTONIC_COARSE (up to a
 * tick behind, 7 times cheaper): for a rewrite in place, whose entry was
 * in use already. */
#define ITIME_SHIFT 18u
#define ITIME_FROM_MS(ms) ((uint32_t)((uint64_t)(ms) * 1000000u >> ITIME_SHIFT))
#define ITIME_TO_MS(t) ((uint32_t)(((uint64_t)(t) << ITIME_SHIFT) / 1000000u))
/* Clock clk in those units. */
static inline uint32_t shmmap__itime_of(clockid_t clk)
{
	struct timespec ts;
	clock_gettime(clk, &ts);
	return (uint32_t)(((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) >> ITIME_SHIFT);
}
uint32_t shmmap__itime(void);
/* (Inline: the rewrite in place, put's fast path, calls it every time.) */
static inline uint32_t shmmap__itime_coarse(void)
{
	return shmmap__itime_of(CLOCK_MONOTONIC_COARSE);
}
uint64_t shmmap__now_ns(void);
/* /proc/PID/stat starttime; -ESRCH if the process is gone or a zombie. */
int shmmap__proc_start_time(pid_t pid, uint64_t *out);

static inline struct seg_slot *seg_slot(const struct seg *s, const struct seg_geom *g, uint32_t i)
{
	return (struct seg_slot *)(s->base + g->slots_off) + i;
}
static inline struct seg_mapdir *seg_dir(const struct seg *s, const struct seg_geom *g, uint32_t i)
{
	return (struct seg_mapdir *)(s->base + g->dir_off) + i;
}
/* Bytes of one slot's counter rows: its max_maps rows, rounded up to a
 * cache line so that no two slots' rows share one. */
static inline size_t seg_ctr_stride(const struct seg_geom *g)
{
	return ((size_t)g->max_maps * sizeof(struct seg_counters) + 63u) & ~(size_t)63u;
}
static inline struct seg_counters *seg_ctr(const struct seg *s, const struct seg_geom *g,
					   uint32_t slot, uint32_t map)
{
	return (struct seg_counters *)(s->base + g->ctr_off + (size_t)slot * seg_ctr_stride(g)) + map;
}
static inline struct seg_class *seg_class(const struct seg *s, const struct seg_geom *g, uint32_t i)
{
	return (struct seg_class *)(s->base + g->classes_off) + i;
}
static inline struct seg_page *seg_page(const struct seg *s, const struct seg_geom *g, uint32_t i)
{
	return (struct seg_page *)(s->base + g->pages_off) + i;
}
static inline uint64_t seg_page_off(const struct seg_geom *g, uint32_t i)
{
	return g->heap_off + (uint64_t)i * SEG_PAGE;
}

/* ---- lock.c ---- */
/* Who is locking: the owner id stored in lock words, and how to tell whether
 * another owner is still alive. */
struct lock_ctx {
	const struct seg *s;
	const struct seg_geom *g;
	uint32_t owner;  /* slot + 1, or LOCK_OWNER_COORD */
	/* 0: wait as long as the owner lives (clients).  Else give up with
	 * -EBUSY after wait_ms while a live owner holds the lock: the
	 * coordinator never waits for a process that may be stopped; it
	 * defers the work instead. */
	uint32_t wait_ms;
};
/* Returns 0, or 1 if the lock was taken over from a dead owner (the caller
 * must repair what it guards), or -EBUSY (only with c->wait_ms: a live
 * owner held it all that time).  A dead owner's lock is taken over after
 * a timeout.  For stripe locks (and the coordinator's sweep). */
int shmmap__lock(_Atomic uint32_t *w, const struct lock_ctx *c, uint64_t *waits);
/* For allocator locks (classes, pool), which only the coordinator repairs:
 * never takes over.  Returns 0, or -EAGAIN once the owner has been dead for
 * LOCK_DEAD_WAIT_MS (the coordinator is down or slow to repair), or -EBUSY
 * as above. */
/* Call the process's wait hook (shmmap_set_wait_hook), if any: what a lock
 * wait does before it sleeps (the Python binding's test of its hook). */
void shmmap__wait_hook_run(void);
int shmmap__lock_nosteal(_Atomic uint32_t *w, const struct lock_ctx *c);
/* Take the lock if it is free, without waiting (inline: put's fast path). */
static inline bool shmmap__trylock(_Atomic uint32_t *w, const struct lock_ctx *c)
{
	uint32_t v = 0;
	return atomic_compare_exchange_strong_explicit(w, &v, c->owner, memory_order_acquire,
						       memory_order_relaxed);
}
void shmmap__unlock_wake(_Atomic uint32_t *w);
/* Let the lock go; wake a sleeper if one may wait (the call, out of line). */
static inline void shmmap__unlock(_Atomic uint32_t *w)
{
	if (atomic_exchange_explicit(w, 0, memory_order_release) & LOCK_WAITERS)
		shmmap__unlock_wake(w);
}
bool shmmap__owner_alive(const struct lock_ctx *c, uint32_t owner);
/* Take lock word w over if `owner` holds it (no wait).  True if we now hold it. */
bool shmmap__lock_take_from(_Atomic uint32_t *w, uint32_t owner, uint32_t me);
#define LOCK_DEAD_WAIT_MS 1000u

/* ---- crash points (test builds only: -DSHMMAP_CRASHPOINTS) ----
 * CRASH_POINT() marks the instant after a store to shared memory on the
 * write paths.  In a test build, shmmap__crash_arm(k, sig) makes the k-th
 * point reached by this process raise sig (SIGKILL, or SIGSTOP to freeze
 * it there).  In a normal build it compiles to nothing. */
#ifdef SHMMAP_CRASHPOINTS
void shmmap__crash_point(void);
void shmmap__crash_arm(unsigned long k, int sig);
/* The same, and sig again at every point after the k-th (SIGSTOP: the
 * test steps the process one store at a time with SIGCONT). */
void shmmap__crash_arm_every(unsigned long k, int sig);
unsigned long shmmap__crash_count(void); /* points passed since arming */
#define CRASH_POINT() shmmap__crash_point()
#else
#define CRASH_POINT() ((void)0)
#endif

/* ---- alloc.c ---- */
void shmmap__alloc_format(const struct seg *s, const struct seg_geom *g);
/*
 * Allocate a block of at least n bytes and store its offset in *rec (an
 * intent record's a, or a local), under the allocator lock, so that a crash
 * at any point leaves the block either free or named by *rec.
 * Returns 0, -ENOSPC, or -EAGAIN (an allocator lock of a dead owner awaits
 * the coordinator's repair).
 */
int shmmap__alloc(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
		  size_t n, _Atomic uint64_t *rec);
/* A block of n bytes (a slab size) on a page its class already has: never
 * a page from the pool, never growth (a move out of a page being emptied,
 * which must not take back a page just emptied).  0 (in *rec), -ENOSPC, or
 * -errno as shmmap__alloc. */
int shmmap__alloc_block(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
			size_t n, _Atomic uint64_t *rec);
/*
 * Free the block at off.  With rec: only if *rec == off, and *rec is
 * cleared under the same lock (so a block is freed once, whoever tries).
 * Returns 0 (freed, or nothing to do) or -EAGAIN (as above; *rec keeps off).
 */
int shmmap__free(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
		 uint64_t off, _Atomic uint64_t *rec);
/* Usable size of the block at off (0 if off is not a live block). */
size_t shmmap__block_size(const struct seg *s, const struct seg_geom *g, uint64_t off);
/* Is the block at off a slab block of exactly the size class of n bytes
 * (block boundary, page of that class)?  One look at its page: for a
 * write's spare block, which the next write of that class takes. */
bool shmmap__block_fits(const struct seg *s, const struct seg_geom *g, uint64_t off, size_t n);
/* The size class of the page off is in, or -1 if it is not a page of a
 * size class (a run).  Just the page's kind and class: for a block this
 * process allocated itself (block_size validates a block). */
int shmmap__block_class(const struct seg *s, const struct seg_geom *g, uint64_t off);
/* A run of whole pages (not zeroed): *first = its first page index.
 * Returns 0, -ENOSPC or -EAGAIN. */
int shmmap__alloc_pages(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
			uint32_t n, uint32_t *first);
int shmmap__free_pages(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
		       uint32_t first, _Atomic uint64_t *rec);
int shmmap__class_of(const struct seg *s, const struct seg_geom *g, size_t n);
/*
 * Draining (evict.c empties a page for another class): mark SLAB page pi
 * of class cls as being emptied by c->owner, off its class's partial list,
 * so that none of its blocks is handed out; the free of its last block
 * gives it to the pool as usual.  An empty slab still of the class (its
 * last free found the pool lock busy) goes to the pool at once (0 too).
 * 0, -EBUSY (not such a page, or drained by another), -EINVAL, -EAGAIN.
 * undrain ends it (if the page is
 * still that class's and still marked by c->owner); alloc_undrain ends
 * every drain of a dead owner (the coordinator's recovery).
 */
int shmmap__page_drain(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
		       uint32_t pi, uint32_t cls);
int shmmap__page_undrain(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
			 uint32_t pi, uint32_t cls);
int shmmap__alloc_undrain(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
			  uint32_t owner);
uint32_t shmmap__nclasses(void);
uint32_t shmmap__class_size(uint32_t cls); /* 0 for an invalid class */
/* A slab of class cls: its pages (1 .. SEG_SPAN_MAX) and the blocks it
 * holds; 0 for an invalid class. */
uint32_t shmmap__class_pages(uint32_t cls);
uint32_t shmmap__class_blocks(uint32_t cls);
/* Contiguous pages a block of n bytes needs from the pool: its class's
 * slab, or the run of a large block. */
uint64_t shmmap__pages_for(size_t n);
/* The head (PAGE_SLAB) of the slab page pi belongs to: pi itself for a
 * SLAB page, its head for a PAGE_SPAN page whose head's class has a slab
 * that long.  False if pi is in no slab (or its descriptors say nothing
 * consistent).  A read without a lock: a hint unless the class lock is
 * held.  pi must be below this process's g->npages. */
bool shmmap__slab_head(const struct seg *s, const struct seg_geom *g, uint32_t pi,
		       uint32_t *head);

#define POOL_HOLD_MS 2000u
/* The coordinator is done with the window it held (evict.c): clients may
 * take its pages again. */
void shmmap__pool_unhold(const struct seg *s);

/* ---- evict.c: what a full segment gives up ---- */
struct op_ctx;
struct map_view;
struct seg_intent;
/*
 * Make room for a block of n bytes and allocate it (recorded in in->a):
 * evict entries of maps whose policy is evict, by the class's hand, or
 * empty a page of another size class whose victims are older (see
 * evict.c).  Called with no lock held.  0, -ENOSPC (nothing could be
 * evicted), -EAGAIN, -SHMMAP_ECORRUPT.
 */
int shmmap__evict_for(const struct op_ctx *o, struct seg_intent *in, size_t n);
/* Empty a window of `pages` contiguous pages (entries of evict maps
 * evicted, or moved if used, as for a large value), for a run that is not
 * an entry (a map's table): 0 (the pages went to the pool), -ENOSPC (no
 * window could be emptied), or -errno.  Called by the coordinator, whose
 * window clients' allocations pass over (seg_header.pool_hold) from the
 * moment it is chosen until the caller's shmmap__pool_unhold after it
 * took its run (or POOL_HOLD_MS). */
int shmmap__evict_pages(const struct op_ctx *o, struct seg_intent *in, uint32_t pages);
/* Class cls handed out a block (call with its lock held, allocs moved
 * on): its checkpoints for probation (evict.c). */
void shmmap__evict_counted(const struct seg *s, const struct seg_geom *g, uint32_t cls);

/* ---- sweep.c: the allocator rebuilt from what is reachable ---- */
struct sweep_report {
	uint64_t roots;      /* blocks found in use */
	uint64_t freed;      /* blocks that were allocated and are now free */
	uint64_t pages_freed;/* pages given back to the pool */
	uint64_t bad_roots;  /* reachable entries in no valid block (left alone) */
	uint32_t dead_slots; /* slots whose intent records were settled */
};
/*
 * Rebuild every page descriptor, class and the pool from the blocks in use:
 * entries reachable from a map, map tables, and the blocks named by intent
 * records of live slots.  Holds every class lock and the pool lock (taking
 * them over from dead owners) for the duration; stripes are not locked
 * (live writers go on; see sweep.c for why nothing in flight is lost).
 * The intent records of slots that are not alive are cleared: what they
 * named is free unless a chain reaches it.  Coordinator only.
 */
/* Returns 0, -ENOMEM, or -EBUSY (a live process held on to an allocator
 * lock for c->wait_ms: nothing was changed; try again later). */
int shmmap__sweep(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
		  struct sweep_report *r);
/* Is the slot's client alive (LIVE, pid present with its start time)? */
bool shmmap__slot_alive(const struct seg *s, const struct seg_geom *g, uint32_t slot);

/* ---- table.c ---- */
/* A map as one attachment sees it: pointers computed and bounds-checked once.
 * The bucket arrays are not here: a map grows, so every operation reads its
 * table word and arrays afresh (struct tbl, shmmap__tbl_load). */
struct map_view {
	uint32_t idx, gen;
	uint32_t nbuckets, nstripes; /* nbuckets: the initial array's */
	uint32_t key_max, val_max;
	uint32_t policy;
	uint32_t chain_max;      /* a longer chain is a cycle: more entries than blocks fit */
	uint32_t max_buckets;
	uint32_t default_ttl;    /* seconds, 0 = none */
	uint64_t quota;          /* bytes, 0 = none: each stripe may hold quota / nstripes */
	uint64_t heap_off;
	_Atomic uint64_t *buckets; /* the initial array (in the table run) */
	struct seg_stripe *stripes;
	struct seg_mapdir *dir;
	uint64_t live;           /* dir's state and gen words, as one, while the
				    map is this view's (view_live) */
	const struct arr_memo *_Atomic memo; /* the view's note of its current
				    array (getfast.h), or shmmap__memo_none */
	_Atomic uint32_t memos;  /* notes made for this view (at most MEMO_MAX) */
	uint32_t put_vlim;       /* put's fast path takes values shorter than this:
				    min(SEG_UNDO_MAX, val_max) + 1, or 0 (none: a map
				    with a quota or a default ttl) */
	struct arr_memo *_Atomic *memo_list; /* where its notes go (a client's
				    view: its attachment's list), NULL: none */
	struct seg_counters *ctr; /* a client's view: its attachment's counters
				    row of the map (set again when a forked child
				    re-attaches), NULL: none (read-only, or not a
				    client's) */
};
/*
 * A client view's note of the bucket array its map's table word w named
 * (getfast.h's bucket_word, client.c's shmmap__memo_note): the array's
 * offset and mask, checked once against the mapping (aligned, in the heap,
 * every bucket below the mapped length, which only grows), so that the
 * fast paths index it with no bounds check while the word is still w.  A
 * table word never comes back (its generation moves at every change, a
 * map's creation included), so a note of w is right for as long as the
 * word is w; one made from a read the word then moved under names no word
 * that will come.  Immutable once published; freed at detach.  Only a
 * client's views take notes (memo_list: their attachment's list; views
 * made elsewhere, the coordinator's, check's, the tests', have none and
 * keep shmmap__memo_none).  A view takes at most MEMO_MAX notes (a word
 * scribbled over and over costs no memory past that: the fast paths check
 * the bounds every time instead).
 */
struct arr_memo {
	uint64_t w, aoff, mask;
	struct arr_memo *next; /* the attachment's list of them, to free */
};
#define MEMO_MAX 64u
/* A view's note before its first (view_fill's): w = 1 names no array (the
 * fast paths look only under a table word without TBL_GROWING). */
extern const struct arr_memo shmmap__memo_none;
void shmmap__memo_note(const struct map_view *v, uint64_t w, uint64_t aoff, uint32_t mask,
		       size_t len);

/* The first 8 bytes of a directory entry (state, then gen) as one word. */
static inline uint64_t dir_live_word(uint32_t gen)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return (uint64_t)gen << 32 | MAP_LIVE;
#else
	return (uint64_t)MAP_LIVE << 32 | gen;
#endif
}
/* Is v's map still the one the view was made for (live, same generation)?
 * One load of the directory entry's state and gen together (8-byte
 * aligned, offsets 0 and 4), compared with what they were at open.  A
 * writer checks it under the stripe lock, so that it never links into a
 * map that is being dropped. */
static inline bool view_live(const struct map_view *v)
{
	return __atomic_load_n((const uint64_t *)(const void *)v->dir, __ATOMIC_ACQUIRE) ==
	       v->live;
}
struct map_params {
	uint32_t nbuckets, nstripes, key_max, val_max, policy;
	uint32_t max_buckets; /* growth stops here; 0: SEG_BUCKETS_MAX */
	uint32_t default_ttl; /* seconds for writes with ttl 0, 0 = none */
	uint64_t quota;       /* bytes of entries (headers, keys, values), 0 = none */
};
#define SEG_BUCKETS_MAX (UINT32_C(1) << 30)
#define GROW_FACTOR_MAX 64u  /* a resize multiplies the buckets by at most this */
/* Growth: a map grows once it holds more than GROW_LOAD_PCT% entries per
 * bucket, to the power of two that makes it GROW_TO_PCT% (see grow.c and
 * the README for the measurements), or only to one at most 100% where an
 * array past that would take more than 1/GROW_ARRAY_SHARE of the heap.
 * Where even the next array would (a segment of a few MiB, or any segment
 * mostly full of small entries), it waits for twice the load: for a cache,
 * a few percent more entries are worth a walk about twice as long. */
#define GROW_LOAD_PCT 100u
#define GROW_TO_PCT 50u
#define GROW_ARRAY_SHARE 32u
#define GROW_ROOM_TRIES 4u /* windows emptied for one resize in a full segment */

/* The load (entries per 100 buckets) over which a map of cur_n buckets
 * grows: the writers' hint (table.c) and the coordinator (grow.c) agree. */
static inline uint64_t grow_load_pct(const struct seg *s, const struct seg_geom *g,
				     uint32_t cur_n)
{
	uint64_t share = (uint64_t)shmmap__seg_live(s, g) * SEG_PAGE / GROW_ARRAY_SHARE;
	return (uint64_t)cur_n * 2u * 8u > share ? 2u * GROW_LOAD_PCT : GROW_LOAD_PCT;
}

/* One consistent look at a map's bucket arrays (its table word). */
struct tbl {
	uint64_t word;
	_Atomic uint64_t *cur, *old; /* old: NULL unless a resize is under way */
	uint32_t cur_n, old_n;       /* old_n: 0 unless a resize is under way */
};
/* Read the table word and the arrays it names, validated; false if they do
 * not validate (torn by a concurrent change, or corrupt). */
bool shmmap__tbl_load(const struct seg *s, const struct map_view *v, struct tbl *t);
int shmmap__map_create(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
		       uint32_t idx, const char *name, const struct map_params *p);
struct empty_report;
int shmmap__map_destroy(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
			uint32_t idx, struct empty_report *r);
int shmmap__map_view(const struct seg *s, const struct seg_geom *g, uint32_t idx,
		     struct map_view *v);
/* A view of a map whose chains may hold entries: a live map, or one
 * being dropped (MAP_INIT, dropping) whose busy stripes are not emptied
 * yet.  For the sweep and check, which must count those entries. */
int shmmap__map_view_linked(const struct seg *s, const struct seg_geom *g, uint32_t idx,
			    struct map_view *v);
uint64_t shmmap__hash(const struct seg_geom *g, const void *key, size_t klen);

struct op_ctx {
	const struct seg *s;
	const struct seg_geom *g;
	struct lock_ctx lk;
	struct seg_counters *ctr; /* this client's counters for the map, or NULL */
	struct seg_intent *intent; /* this thread's intent record, or NULL (no crash safety) */
	/* With intent, this process's note of the size class of the record's
	 * spare (class + 1; 0: none or not known): a hint, private, that tells
	 * a write whether the spare will do before it looks at its page. */
	uint8_t *spare_cls;
	/* With a client's intent record k, its undo record (the slot's
	 * undo[k]), or NULL: a scratch record (the coordinator's writes), or a
	 * record past the first SEG_UNDOS, has none, and a write without one
	 * never rewrites in place.  Set where the record is claimed. */
	struct seg_undo *undo;
};
int shmmap__tbl_get(const struct op_ctx *o, const struct map_view *v, const void *key,
		    size_t klen, void *buf, size_t cap, size_t *vlen);
/* get_fast (getfast.h) could not tell: ask shmmap__tbl_get. */
#define GET_SLOW 1
/* get_fast found the value and copied it (a 0 otherwise), and this
 * attachment's hits of the map reached a multiple of GET_LOOK_EVERY: the
 * caller looks whether the segment is still the one under its name (a read-
 * mostly worker on a removed segment served its stale values forever). */
#define GET_LOOK 2
#define GET_LOOK_EVERY 4096u
int shmmap__tbl_put(const struct op_ctx *o, const struct map_view *v, const void *key,
		    size_t klen, const void *val, size_t vlen, uint32_t ttl_s, unsigned flags);
/* The same with the key's hash h (shmmap__hash) computed already, or 0 if
 * klen is 0 or above the map's key_max (put then says which). */
int shmmap__tbl_put_hashed(const struct op_ctx *o, const struct map_view *v, uint64_t h,
			   const void *key, size_t klen, const void *val, size_t vlen,
			   uint32_t ttl_s, unsigned flags);
int shmmap__tbl_del(const struct op_ctx *o, const struct map_view *v, const void *key,
		    size_t klen);
int shmmap__tbl_incr(const struct op_ctx *o, const struct map_view *v, const void *key,
		     size_t klen, int64_t delta, uint32_t ttl_s, int64_t *out);
/* put with an absolute expiry (CLOCK_REALTIME ms, 0 = never): snapshots. */
int shmmap__tbl_put_at(const struct op_ctx *o, const struct map_view *v, const void *key,
		       size_t klen, const void *val, size_t vlen, uint64_t expire_ms,
		       unsigned flags);
int shmmap__tbl_cas(const struct op_ctx *o, const struct map_view *v, const void *key,
		    size_t klen, const void *expected, size_t elen, const void *val, size_t vlen,
		    uint32_t ttl_s);
/* Walk the live entries (see shmmap_foreach in shmmap.h). */
int shmmap__tbl_foreach(const struct op_ctx *o, const struct map_view *v, shmmap_each_fn fn,
			void *arg);
/* Unlink and free expired entries of up to nb buckets from *cursor (moved
 * on); returns how many were removed.  Each stripe is held for one removal
 * at a time, and a busy stripe is skipped.  For the coordinator's
 * background reclaim.  *deferred is set if a free had to be left to a
 * sweep (an allocator lock of a dead process): the caller sweeps. */
uint64_t shmmap__tbl_reclaim(const struct op_ctx *o, const struct map_view *v, uint32_t *cursor,
			     uint32_t nb, bool *deferred);
/* What emptying a map's stripes did (flush, drop). */
struct empty_report {
	uint32_t busy;       /* stripes a live process held on to: left as they were */
	uint32_t busy_owner; /* the lock owner id of one of them */
	bool deferred;       /* frees were left to a sweep (as above) */
};
/* Remove every entry of map idx, stripe by stripe (coordinator only):
 * 0 or -ENOENT; busy stripes are skipped (see struct empty_report). */
int shmmap__map_flush(const struct seg *s, const struct seg_geom *g, const struct lock_ctx *c,
		      uint32_t idx, struct empty_report *r);
/* Finish emptying a map being dropped (MAP_INIT, dropping): 0 once it is
 * MAP_FREE, 1 while a live process still holds one of its stripes,
 * -ENOENT if it is not being dropped.  r accumulates. */
int shmmap__map_drop_finish(const struct seg *s, const struct seg_geom *g,
			    const struct lock_ctx *c, uint32_t idx, struct empty_report *r);
/* Bytes of a map table run: stripes, initial buckets. */
uint64_t shmmap__table_bytes(uint32_t nbuckets, uint32_t nstripes);
/* Validate the entry at off for map v: in bounds, aligned, lengths within limits. */
const struct seg_entry *shmmap__entry_at(const struct seg *s, const struct map_view *v,
					 uint64_t off);
/*
 * Repair a stripe whose lock the caller holds, taken over from a dead
 * owner: make its sequence counter even, settle the intent records that
 * name it (a block a dead writer linked, or did not unlink, is no longer
 * in flight), recount its totals.
 */
void shmmap__stripe_repair(const struct op_ctx *o, const struct map_view *v, uint32_t stripe);
/* Is the entry at off linked in its bucket of v?  Call with its stripe locked. */
bool shmmap__tbl_linked(const struct seg *s, const struct map_view *v, uint64_t off);
/*
 * During a resize: move up to budget old buckets of stripe `stripe` to the
 * new array, in order (struct seg_stripe.move_next).  With wait false the
 * stripe lock is only tried (-EBUSY if busy).  Returns how many of the
 * stripe's old buckets are still to move (0: the stripe is done, or no
 * resize is under way), -EBUSY, -ESTALE or -SHMMAP_ECORRUPT.
 */
int shmmap__tbl_move(const struct op_ctx *o, const struct map_view *v, uint32_t stripe,
		     uint32_t budget, bool wait);
/* Entries of a map (the sum of its stripes' totals, read without locks). */
uint64_t shmmap__tbl_entries(const struct map_view *v);
/*
 * Evict the entry at off from map v if it is linked there (and, unless
 * how->force, it expired, or it is not younger than how->young and its
 * use count is 0; else, under the lock, it is left alone, or kept
 * (ENT_KEPT) with its count lowered by one, or as is for the probation
 * hand (how->probe), which leaves kept entries alone): unlink it under
 * its stripe lock with the victim recorded in in->b (in->map and
 * in->stripe name it meanwhile, and are given back), then free it.
 * Returns 1 (evicted; *kv += its key and value bytes, *age = its age in
 * itime units as of how->now), 2 (moved: how->move), 0 (not linked, in
 * use, kept, on probation, or its stripe is busy), or a negative errno
 * (-EAGAIN: the free awaits an allocator repair; in->b keeps the block;
 * -ENOSPC: how->move found no block for it).
 */
struct evict_how {
	bool force;        /* evict it whatever its count (a page being emptied) */
	bool probe;        /* the probation hand: a kept entry is left alone, one
			      with a count is kept (ENT_KEPT, its count as is) */
	bool move;         /* with force, a page being emptied: an entry with a
			      count is moved to a block elsewhere, returning 2,
			      or -ENOSPC if no block is free (nothing changed) */
	uint32_t young;    /* not 0: an entry younger than this (itime units) is
			      left alone */
	bool keep_counts;  /* an entry with a count is kept with its count as is
			      (the main hand making a block for a move) */
	uint32_t now;      /* shmmap__itime() when the eviction began (set by
			      the caller: ages are told against it) */
};
int shmmap__tbl_evict_at(const struct op_ctx *o, const struct map_view *v, struct seg_intent *in,
			 uint64_t off, const struct evict_how *how, uint64_t *kv, uint32_t *age);
/* Wake the coordinator's growth thread (a writer saw a map over its load). */
void shmmap__grow_wake(const struct seg *s);

/* ---- grow.c: the coordinator's side of growth ---- */
/* What the coordinator remembers of one map between rounds (private). */
struct grow_track {
	uint64_t word;           /* table word the barrier pass is for */
	uint32_t gen;            /* map generation */
	uint32_t npassed;
	unsigned char *passed;   /* [nstripes] of the barrier pass */
	uint32_t cap;
	uint32_t failed_n;       /* a resize to this size found no memory */
	uint64_t failed_at;      /* entries when it failed */
	uint32_t room;           /* buckets of the least array the resize that
				    failed wants: the coordinator empties a
				    window for it and starts it there */
	uint32_t room_tries;     /* windows emptied for this attempt */
	bool resting;            /* over one entry per bucket, and not growing by
				    choice (its limit, or no memory): writers'
				    hints from its stripes need no round */
};
/*
 * One bounded round of growth work on map idx: start a resize if the map
 * is over its load, move up to `step` buckets per stripe of a resize under
 * way (stripe locks only tried), finish it once every bucket moved, and
 * free the old array once every stripe lock was seen free since (no writer
 * still uses it).  mu is held around every allocation, free and table word
 * change (the coordinator's sweeps hold it too).  Returns 2 if it made
 * progress, 1 if work is pending but blocked (a busy stripe), 0 if idle.
 */
int shmmap__grow_round(const struct op_ctx *o, uint32_t idx, struct grow_track *gt,
		       pthread_mutex_t *mu, uint32_t step);
/* Start a resize of map v to n buckets now (coordinator, or a test playing
 * it).  0, -EBUSY (one is under way or retiring), -ENOSPC, -EINVAL. */
int shmmap__grow_start(const struct op_ctx *o, const struct map_view *v, uint32_t n,
		       pthread_mutex_t *mu);
/* Put a map's table back to its initial array, emptied (the map is being
 * dropped or was half created: nobody may write it).  *runs gets the first
 * pages + 1 of the arrays it no longer names (0: none), for the caller to
 * free (or to leave to a sweep). */
void shmmap__grow_reset(const struct seg *s, const struct seg_geom *g, struct seg_mapdir *d,
			uint32_t runs[2]);
void shmmap__grow_track_free(struct grow_track *gt);

/* ---- client.c: the attachment ---- */
#define ATTACH_ORPHANED 2u /* shmmap.forked: the segment was removed */
struct client_ext; /* client.c's own state: published map views */
struct shmmap {
	struct seg seg;
	struct seg_geom geom;
	/* Set in a child by the fork handler (1): slot, slot_gen and sock are
	 * the parent's (sock closed, -1) until the next call re-attaches.
	 * ATTACH_ORPHANED: the segment was removed (client.c): every call
	 * fails.  Read with acquire on every call: slot and slot_gen are valid
	 * after it. */
	_Atomic uint32_t forked;
	uint32_t writes;      /* writes begun (relaxed, racy: a pace for orphan checks) */
	int sock;
	uint32_t slot;
	uint64_t slot_gen;
	uint16_t tag;         /* attachment tag carried in handle ids (never changes) */
	/* slot's record in the segment and its counters row (NULL when
	 * read-only), set with slot: what every data call would compute. */
	struct seg_slot *own;
	struct seg_counters *ctr;
	pthread_mutex_t sock_mu; /* one request/reply at a time on sock */
	struct client_ext *ext;
};
/* Handle id: tag(16) | gen(32) | index(16). */
static inline uint64_t shmmap__handle_id(uint16_t tag, uint32_t gen, uint32_t idx)
{
	return ((uint64_t)tag << 48) | ((uint64_t)gen << 16) | (idx & 0xffffu);
}
/* shmmap_attach for admin tools: may take the client slot the coordinator
 * keeps for them when every other one is taken. */
int shmmap__attach_admin(const char *socket_path, shmmap **out);
/* Resolve a handle to a validated view, or a negative errno. */
int shmmap__resolve(shmmap *sm, shmmap_map m, const struct map_view **v);
/* One request/reply round trip with the coordinator (proto.h messages). */
struct proto_msg;
int shmmap__request(shmmap *sm, const struct proto_msg *req, struct proto_msg *rep);
/* How long the requests of this attachment wait for their reply (10 s from
 * the attach): an admin tool's save or grow may take minutes on the
 * coordinator's side.  Until a reconnect.  0 or a negative errno. */
int shmmap__reply_timeout(shmmap *sm, unsigned seconds);
/* The same for every connection made from now on, attaches included (10 s
 * unless set): tests of a stopped coordinator wait 1 s, not 10. */
void shmmap__reply_timeout_default(unsigned seconds);

/* ---- check.c ---- */
struct check_report {
	uint64_t entries, bytes, blocks_used, leaked, maps, errors;
	/* Called once per problem found; may be NULL. */
	void (*problem)(void *arg, const char *what);
	void *arg;
};
int shmmap__check(const struct seg *s, const struct seg_geom *g, struct check_report *r);

#endif /* SHMMAP_INTERNAL_H */
