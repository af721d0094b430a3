package org.grpo4j.internal.train;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.jfree.chart.ChartFactory;
import org.jfree.chart.ChartUtils;
import org.jfree.chart.JFreeChart;
import org.jfree.chart.plot.PlotOrientation;
import org.jfree.data.xy.XYSeries;
import org.jfree.data.xy.XYSeriesCollection;

/** PNG line charts of training metrics over steps (JFreeChart, headless). */
public final class Plots {
    private Plots() {}

    /** The charts written: file name, title, y label, metric keys. */
    static final List<Object[]> CHARTS = List.of(
            new Object[] {"reward.png", "Reward and correct rate", "value", List.of("objective/verifiable_correct_rate", "objective/scores_over_10",
                    "eval/verifiable_correct_rate")}, // the last at eval steps only
            new Object[] {"kl.png", "KL to the reference policy (sum per sequence)", "kl", List.of("objective/kl", "objective/kl3")},
            new Object[] {"response_length.png", "Response length (tokens)", "tokens", List.of("val/response_length")},
            new Object[] {"loss.png", "Loss", "loss", List.of("loss/policy_avg")});

    public static void write(Path dir, List<Map<String, Double>> rows) throws IOException {
        Files.createDirectories(dir);
        for (Object[] c : CHARTS) {
            XYSeriesCollection ds = new XYSeriesCollection();
            @SuppressWarnings("unchecked")
            List<String> keys = (List<String>) c[3];
            for (String k : keys) {
                XYSeries s = new XYSeries(k);
                for (Map<String, Double> r : rows) {
                    Double x = r.get("training_step"), y = r.get(k);
                    if (x != null && y != null && Double.isFinite(y)) s.add(x, y);
                }
                if (s.getItemCount() > 0) ds.addSeries(s);
            }
            JFreeChart chart = ChartFactory.createXYLineChart((String) c[1], "training step", (String) c[2], ds,
                    PlotOrientation.VERTICAL, true, false, false);
            Path tmp = dir.resolve("." + c[0] + ".tmp");
            try {
                ChartUtils.saveChartAsPNG(tmp.toFile(), chart, 800, 450);
                Files.move(tmp, dir.resolve((String) c[0]), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
            } catch (IOException | RuntimeException | Error e) { // no empty .tmp left behind
                Files.deleteIfExists(tmp);
                throw e;
            }
        }
    }
}
