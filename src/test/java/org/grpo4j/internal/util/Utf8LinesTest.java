package org.grpo4j.internal.util;

import static org.junit.jupiter.api.Assertions.*;

import java.io.BufferedReader;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.StringReader;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** Utf8Lines splits lines as BufferedReader.readLine does, whatever the reads' sizes, and names a bad line by its number. */
class Utf8LinesTest {
    /** A stream that hands out at most a few bytes a read, so that line ends fall across reads. */
    static InputStream trickle(byte[] b, SplittableRandom r) {
        return new ByteArrayInputStream(b) {
            @Override
            public synchronized int read(byte[] d, int off, int len) { return super.read(d, off, Math.min(len, 1 + r.nextInt(3))); }
        };
    }

    static List<String> lines(InputStream in) throws IOException {
        Utf8Lines u = new Utf8Lines(in);
        List<String> out = new ArrayList<>();
        for (String l; (l = u.next()) != null; ) {
            out.add(l);
            assertEquals(out.size(), u.number());
        }
        return out;
    }

    @Test
    void linesAreBufferedReadersLines() throws IOException {
        SplittableRandom r = new SplittableRandom(3);
        String[] pieces = {"a", "{\"x\": 1}", "", " ", "\n", "\r", "\r\n", "\n\r", "\u00e4\u20ac", "\uD83D\uDE00"};
        for (int t = 0; t < 2000; t++) {
            StringBuilder sb = new StringBuilder();
            for (int k = r.nextInt(12); k > 0; k--) sb.append(pieces[r.nextInt(pieces.length)]);
            String text = sb.toString();
            List<String> want = new ArrayList<>();
            try (BufferedReader br = new BufferedReader(new StringReader(text))) {
                for (String l; (l = br.readLine()) != null; ) want.add(l);
            }
            byte[] bytes = text.getBytes(StandardCharsets.UTF_8);
            assertEquals(want, lines(new ByteArrayInputStream(bytes)), () -> "whole reads of " + text.replace("\r", "\\r").replace("\n", "\\n"));
            assertEquals(want, lines(trickle(bytes, r)), () -> "small reads of " + text.replace("\r", "\\r").replace("\n", "\\n"));
        }
        // a line longer than the read buffer; a byte order mark at the start of line 1 only
        String longLine = "y".repeat(200_000);
        assertEquals(List.of(longLine, "z"), lines(new ByteArrayInputStream((longLine + "\r\nz").getBytes(StandardCharsets.UTF_8))));
        assertEquals(List.of("a", "\uFEFFb"), lines(new ByteArrayInputStream("\uFEFFa\n\uFEFFb".getBytes(StandardCharsets.UTF_8))));
    }

    @Test
    void badUtf8IsNamedAtItsLine() throws IOException {
        byte[] b = "ok\r\nfine\n".getBytes(StandardCharsets.UTF_8);
        byte[] bad = new byte[b.length + 4];
        System.arraycopy(b, 0, bad, 0, b.length);
        bad[b.length] = 'x';
        bad[b.length + 1] = (byte) 0xE4; // Latin-1 'ä'
        bad[b.length + 2] = '\n';
        bad[b.length + 3] = 'y';
        Utf8Lines u = new Utf8Lines(new ByteArrayInputStream(bad));
        assertEquals("ok", u.next());
        assertEquals("fine", u.next());
        assertThrows(CharacterCodingException.class, u::next);
        assertEquals(3, u.number());
        assertEquals("y", u.next(), "the lines after a bad one can still be read");
    }
}
