package org.grpo4j.internal.reward;

import com.cybozu.labs.langdetect.Detector;
import com.cybozu.labs.langdetect.DetectorFactory;
import com.cybozu.labs.langdetect.LangDetectException;
import java.io.BufferedReader;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * Language detection for IFEval's response_language: cybozu langdetect (the library Python's langdetect is a port of,
 * with the same profiles), profiles loaded from its jar, fixed seed. As in IFEval, text the detector cannot handle
 * (no features) counts as following the instruction.
 */
final class Language {
    private Language() {}

    private static volatile boolean loaded;

    static final String[] LANGS = {"af", "ar", "bg", "bn", "cs", "da", "de", "el", "en", "es", "et", "fa", "fi", "fr", "gu", "he", "hi", "hr",
            "hu", "id", "it", "ja", "kn", "ko", "lt", "lv", "mk", "ml", "mr", "ne", "nl", "no", "pa", "pl", "pt", "ro", "ru", "sk", "sl", "so",
            "sq", "sv", "sw", "ta", "te", "th", "tl", "tr", "uk", "ur", "vi", "zh-cn", "zh-tw"};

    private static synchronized void load() throws Exception {
        if (loaded) return;
        List<String> profiles = new ArrayList<>();
        for (String l : LANGS) {
            try (InputStream in = Language.class.getResourceAsStream("/profiles/" + l)) {
                if (in == null) continue;
                try (BufferedReader r = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8))) {
                    StringBuilder sb = new StringBuilder();
                    String line;
                    while ((line = r.readLine()) != null) sb.append(line);
                    profiles.add(sb.toString());
                }
            }
        }
        if (profiles.isEmpty()) throw new IllegalStateException("langdetect profiles not found on the classpath");
        DetectorFactory.clear();
        DetectorFactory.loadProfile(profiles);
        DetectorFactory.setSeed(0);
        loaded = true;
    }

    static String detect(String text) throws Exception {
        load();
        Detector d = DetectorFactory.create();
        d.append(text);
        return d.detect();
    }

    static boolean detectIs(String text, String lang) throws Exception {
        try {
            String got = detect(text);
            return got.equals(lang) || (got.startsWith("zh") && lang.startsWith("zh"));
        } catch (LangDetectException e) {
            return true; // IFEval: a detector failure counts as followed
        }
    }
}
