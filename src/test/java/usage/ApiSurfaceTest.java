package usage;

import static org.junit.jupiter.api.Assertions.*;

import java.lang.reflect.Constructor;
import java.lang.reflect.Executable;
import java.lang.reflect.Field;
import java.lang.reflect.GenericArrayType;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.RecordComponent;
import java.lang.reflect.Type;
import java.lang.reflect.TypeVariable;
import java.lang.reflect.WildcardType;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Stream;
import org.grpo4j.Backend;
import org.junit.jupiter.api.Test;

/**
 * The public API is what docs/api.md says it is: three packages whose public members mention only JDK and API types,
 * every other public class under org.grpo4j.internal (or the JNI binding), and each public API type states its
 * thread safety.
 */
class ApiSurfaceTest {
    static final Set<String> API_PACKAGES = Set.of("org.grpo4j", "org.grpo4j.reward", "org.grpo4j.train");

    /** The API, type by type: adding a public type is a decision (docs/api.md), so it is listed here too. */
    static final Set<String> API_TYPES = new TreeSet<>(List.of(
            "org.grpo4j.Backend", "org.grpo4j.ChatMessage", "org.grpo4j.Completion", "org.grpo4j.Completion$FinishReason",
            "org.grpo4j.Model", "org.grpo4j.Sampling",
            "org.grpo4j.reward.Compat", "org.grpo4j.reward.RewardFunction", "org.grpo4j.reward.RewardFunction$Score",
            "org.grpo4j.reward.RewardFunction$Verifier", "org.grpo4j.reward.Rewards", "org.grpo4j.reward.Rewards$Item",
            "org.grpo4j.reward.Rewards$Result", "org.grpo4j.reward.RlvrRow",
            "org.grpo4j.train.GrpoConfig", "org.grpo4j.train.GrpoConfig$SftWarmup", "org.grpo4j.train.GrpoTrainer",
            "org.grpo4j.train.GrpoTrainer$Builder", "org.grpo4j.train.GrpoTrainer$Listener", "org.grpo4j.train.GrpoTrainer$Result",
            "org.grpo4j.train.TrainingAbortedException"));

    static List<Class<?>> mainClasses() throws Exception {
        Path root = Path.of(Backend.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        List<Class<?>> out = new ArrayList<>();
        try (Stream<Path> s = Files.walk(root)) {
            for (Path p : s.filter(f -> f.toString().endsWith(".class")).sorted().toList()) {
                String name = root.relativize(p).toString().replace('/', '.').replaceAll("\\.class$", "");
                if (name.endsWith("package-info")) continue;
                out.add(Class.forName(name, false, ApiSurfaceTest.class.getClassLoader()));
            }
        }
        assertTrue(out.size() > 150, "found the main classes under " + root + ": " + out.size());
        return out;
    }

    /** Public, and reachable: every enclosing class public too. */
    static boolean exported(Class<?> c) {
        for (Class<?> k = c; k != null; k = k.getEnclosingClass())
            if (!Modifier.isPublic(k.getModifiers()) || k.isAnonymousClass() || k.isLocalClass()) return false;
        return true;
    }

    @Test
    void publicTypesAreTheApiOrInternal() throws Exception {
        Set<String> api = new TreeSet<>(), misplaced = new TreeSet<>();
        for (Class<?> c : mainClasses()) {
            if (!exported(c)) continue;
            String pkg = c.getPackageName();
            if (API_PACKAGES.contains(pkg)) api.add(c.getName());
            else if (!pkg.startsWith("org.grpo4j.internal.") && !pkg.equals("org.grpo4j.internal") && !pkg.equals("org.grpo4j.bindings")) misplaced.add(c.getName());
        }
        assertEquals(Set.of(), misplaced, "public classes outside the API and org.grpo4j.internal");
        assertEquals(API_TYPES, api, "the public API types (docs/api.md)");
    }

    @Test
    void apiSignaturesMentionOnlyApiAndJdkTypes() throws Exception {
        List<String> leaks = new ArrayList<>();
        for (String name : API_TYPES) {
            Class<?> c = Class.forName(name);
            check(c.getGenericSuperclass(), name + " extends", leaks);
            for (Type t : c.getGenericInterfaces()) check(t, name + " implements", leaks);
            for (Field f : c.getDeclaredFields())
                if (visible(f.getModifiers())) check(f.getGenericType(), name + "." + f.getName(), leaks);
            for (Constructor<?> k : c.getDeclaredConstructors()) if (visible(k.getModifiers())) checkExecutable(k, name + ".<init>", leaks);
            for (Method m : c.getDeclaredMethods()) if (visible(m.getModifiers()) && !m.isSynthetic()) checkExecutable(m, name + "." + m.getName(), leaks);
            if (c.isRecord()) for (RecordComponent rc : c.getRecordComponents()) check(rc.getGenericType(), name + "." + rc.getName(), leaks);
        }
        assertEquals(List.of(), leaks, "API members that expose implementation or third-party types");
    }

    private static boolean visible(int mod) { return Modifier.isPublic(mod) || Modifier.isProtected(mod); }

    private static void checkExecutable(Executable e, String where, List<String> leaks) {
        for (Type t : e.getGenericParameterTypes()) check(t, where + " parameter", leaks);
        for (Type t : e.getGenericExceptionTypes()) check(t, where + " throws", leaks);
        if (e instanceof Method m) check(m.getGenericReturnType(), where + " returns", leaks);
    }

    private static void check(Type t, String where, List<String> leaks) {
        if (t == null) return;
        if (t instanceof Class<?> c) {
            while (c.isArray()) c = c.getComponentType();
            if (c.isPrimitive() || c.getName().startsWith("java.")) return;
            if (!API_TYPES.contains(c.getName())) leaks.add(where + ": " + c.getName());
        } else if (t instanceof ParameterizedType p) {
            check(p.getRawType(), where, leaks);
            for (Type a : p.getActualTypeArguments()) check(a, where, leaks);
        } else if (t instanceof GenericArrayType g) {
            check(g.getGenericComponentType(), where, leaks);
        } else if (t instanceof WildcardType w) {
            for (Type b : w.getUpperBounds()) check(b, where, leaks);
            for (Type b : w.getLowerBounds()) check(b, where, leaks);
        } else if (t instanceof TypeVariable<?> v) {
            for (Type b : v.getBounds()) check(b, where, leaks);
        }
    }

    /** Each top-level API type's class comment says how it behaves across threads. */
    @Test
    void everyApiTypeStatesItsThreadSafety() throws Exception {
        List<String> silent = new ArrayList<>();
        for (String name : API_TYPES) {
            if (name.contains("$")) continue; // nested types: their enclosing type's comment covers them
            String src = Files.readString(Path.of("java", name.replace('.', '/') + ".java"));
            java.util.regex.Matcher decl = java.util.regex.Pattern.compile("^public ", java.util.regex.Pattern.MULTILINE).matcher(src);
            assertTrue(decl.find(), name);
            String comment = src.substring(0, decl.start());
            if (!comment.contains("<b>Thread safety:</b>")) silent.add(name);
        }
        assertEquals(List.of(), silent, "API types whose javadoc does not state their thread safety");
    }
}
