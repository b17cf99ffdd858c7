/* SPDX-License-Identifier: Apache-2.0 */
/* Intrusive doubly-linked circular list, as in the kernel's list.h. */
#ifndef ENG_LIST_H
#define ENG_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct eng_list {
	struct eng_list *prev, *next;
};

#define eng_list_entry(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static inline void eng_list_init(struct eng_list *h)
{
	h->prev = h->next = h;
}

static inline bool eng_list_empty(const struct eng_list *h)
{
	return h->next == h;
}

static inline void eng_list_add_tail(struct eng_list *h, struct eng_list *n)
{
	n->prev = h->prev;
	n->next = h;
	h->prev->next = n;
	h->prev = n;
}

/* Unlinks <n> and leaves it self-linked, so a second delete is harmless. */
static inline void eng_list_del(struct eng_list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}

static inline void eng_list_move_tail(struct eng_list *h, struct eng_list *n)
{
	eng_list_del(n);
	eng_list_add_tail(h, n);
}

#endif
