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
            released = true;
            free();
        }
    }

    abstract void free();
}
