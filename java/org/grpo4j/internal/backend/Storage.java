package org.grpo4j.internal.backend;

/** The memory behind one or more tensors (an owner and its views). Released once, by the owning tensor. */
abstract class Storage {
    final DType dtype;
    final long capacity; // elements
    private boolean released;

    Storage(DType dtype, long capacity) {
        this.dtype = dtype;
        this.capacity = capacity;
    }

    final boolean released() { return released; }

    final void release() {
        if (!released) {
            checkFree(); // may refuse (the storage then stays allocated and accounted for)
            released = true;
            free();
        }
    }

    /** Throws when the memory cannot be freed now (before anything is marked released). */
    void checkFree() {}

    abstract void free();
}
