/* Scenarios shared by the driver tests. Each starts and ends with an empty, mounted pool. */
#pragma once

#include "storage_test.h"

typedef struct {
    /* Extra checks on dst, a copy of src (readonly: dst is a snapshot). */
    void (*check_copy)(const char *src, const char *dst, gboolean readonly);
    /* Extra checks on a volume just restored from a snapshot. */
    void (*check_restored)(const char *volume);
    /* Copies run a child process, so a cancelled GCancellable stops them. */
    gboolean copies_are_processes;
    /* If not 0, the pool's total size must not exceed this (loop pools). */
    guint64 pool_total_max;
} StorageDriverChecks;

void storage_scenario_copy(FerryPool *pool, const StorageDriverChecks *checks);
void storage_scenario_snapshots(FerryPool *pool, const StorageDriverChecks *checks);
/* Symlinks out of the volume and a 3000-deep tree: usage and delete stay inside. */
void storage_scenario_hostile(FerryPool *pool);
/* Refused with a volume; leftovers of crashed operations swept; then deleted. The pool is gone after. */
void storage_scenario_pool_delete(FerryPool *pool);
