package usage;

import static org.junit.jupiter.api.Assertions.*;

import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.stream.Stream;
import javax.tools.DiagnosticCollector;
import javax.tools.DocumentationTool;
import javax.tools.JavaFileObject;
import javax.tools.StandardJavaFileManager;
import javax.tools.ToolProvider;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The API's javadoc builds with every doclint check on and not one warning, as {@code mvn javadoc:javadoc} runs it
 * (the pom documents the same three packages): every public member has a comment, every parameter, return value and
 * exception is described, and the HTML and references are valid.
 */
class ApiDocTest {

    @Test
    void javadocOfTheApiHasNoWarnings(@TempDir Path out) throws Exception {
        DocumentationTool tool = ToolProvider.getSystemDocumentationTool();
        assertNotNull(tool, "the JDK's javadoc tool");
        List<Path> sources = new ArrayList<>();
        for (String pkg : ApiSurfaceTest.API_PACKAGES) {
            try (Stream<Path> s = Files.list(Path.of("java", pkg.replace('.', '/')))) {
                s.filter(p -> p.toString().endsWith(".java")).sorted().forEach(sources::add);
            }
        }
        DiagnosticCollector<JavaFileObject> diags = new DiagnosticCollector<>();
        StringWriter log = new StringWriter();
        try (StandardJavaFileManager fm = tool.getStandardFileManager(diags, Locale.ROOT, null)) {
            // the implementation comes from the compiled classes, so only the API's sources are read and documented
            List<String> opts = List.of("-d", out.toString(), "-classpath", System.getProperty("java.class.path"), "-Xdoclint:all", "-Werror", "-quiet",
                    "-notimestamp");
            Boolean ok = tool.getTask(log, fm, diags, null, opts, fm.getJavaFileObjectsFromPaths(sources)).call();
            StringBuilder all = new StringBuilder(log.toString());
            diags.getDiagnostics().forEach(d -> all.append(d).append('\n'));
            assertTrue(ok, all.toString());
            assertEquals(List.of(), diags.getDiagnostics().stream().map(Object::toString).toList(), all.toString());
        }
        assertTrue(Files.isRegularFile(out.resolve("org/grpo4j/train/GrpoTrainer.html")));
        assertFalse(Files.exists(out.resolve("org/grpo4j/internal")), "internal packages are not documented");
    }
}
