/**
 * grpo4j's implementation (this package and every {@code org.grpo4j.internal.*} package): not API. Its types are
 * public only so that the implementation's packages can reach each other; applications use {@code org.grpo4j},
 * {@code org.grpo4j.reward} and {@code org.grpo4j.train} (docs/api.md).
 */
package org.grpo4j.internal;
