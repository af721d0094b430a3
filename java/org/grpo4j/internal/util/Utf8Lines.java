package org.grpo4j.internal.util;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;

/**
 * A UTF-8 text stream read line by line, each line decoded on its own, so that malformed UTF-8 is reported at its line
 * (a BufferedReader decodes ahead: its first readLine fails for a bad byte on line 8). Lines end as BufferedReader's
 * do: at "\n", "\r\n" or a lone "\r". Not thread-safe; the caller closes the stream.
 */
public final class Utf8Lines {
    private final InputStream in;
    private final byte[] buf = new byte[1 << 16];
    private int pos, end;
    private int number;
    private boolean skipLf;

    public Utf8Lines(InputStream in) { this.in = in; }

    /** The next line's bytes (without its end: "\n", "\r\n" or a lone "\r"), or null at the end of the stream. */
    public byte[] nextRaw() throws IOException {
        ByteArrayOutputStream line = null;
        while (true) {
            if (pos == end && !fill()) {
                if (line == null) return null;
                number++;
                return line.toByteArray();
            }
            if (skipLf) { // the "\n" of a "\r\n" whose "\r" ended the line before
                skipLf = false;
                if (buf[pos] == '\n') {
                    pos++;
                    continue;
                }
            }
            int e = pos;
            while (e < end && buf[e] != '\n' && buf[e] != '\r') e++;
            if (line == null) line = new ByteArrayOutputStream(Math.max(16, e - pos));
            line.write(buf, pos, e - pos);
            if (e < end) {
                skipLf = buf[e] == '\r';
                pos = e + 1;
                number++;
                return line.toByteArray();
            }
            pos = end;
        }
    }

    private boolean fill() throws IOException {
        int n = in.read(buf, 0, buf.length);
        pos = 0;
        end = Math.max(n, 0);
        return n > 0;
    }

    /**
     * The next line decoded (a byte order mark at the start of line 1 dropped), or null at the end of the stream.
     *
     * @throws CharacterCodingException when the line is not valid UTF-8 ({@link #number()} is its line)
     */
    public String next() throws IOException {
        byte[] raw = nextRaw();
        if (raw == null) return null;
        String s = decode(raw);
        return number == 1 && s.startsWith("\uFEFF") ? s.substring(1) : s;
    }

    /** The line number (from 1) of the line last returned. */
    public int number() { return number; }

    /** Strict UTF-8 decoding: malformed or unmappable input throws. */
    public static String decode(byte[] raw) throws CharacterCodingException {
        return StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT).onUnmappableCharacter(CodingErrorAction.REPORT)
                .decode(ByteBuffer.wrap(raw)).toString();
    }
}
