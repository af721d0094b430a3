package org.grpo4j.internal.bench;

import java.awt.BasicStroke;
import java.awt.Color;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import org.jfree.chart.ChartFactory;
import org.jfree.chart.ChartUtils;
import org.jfree.chart.JFreeChart;
import org.jfree.chart.axis.LogAxis;
import org.jfree.chart.plot.CategoryPlot;
import org.jfree.chart.plot.PlotOrientation;
import org.jfree.chart.plot.ValueMarker;
import org.jfree.chart.renderer.category.BarRenderer;
import org.jfree.chart.renderer.category.StandardBarPainter;
import org.jfree.data.category.DefaultCategoryDataset;

/**
 * The kernel comparison's bar chart. Its own class, so that {@link Compare} (and the end-to-end comparison, which uses
 * its helpers) loads in a Java runtime without java.desktop; call it through {@link org.grpo4j.internal.util.Charts}.
 */
public final class CompareChart {
    private CompareChart() {}

    /** A horizontal bar chart of the ratios (one bar per line that has one), with 1.0 marked; written atomically. */
    public static void write(Compare.Result res, String title, Path png) throws IOException {
        System.setProperty("java.awt.headless", "true");
        DefaultCategoryDataset ds = new DefaultCategoryDataset();
        int n = 0;
        for (Compare.Line l : res.lines()) {
            if (l.ratio() == null) continue;
            ds.addValue(l.ratio(), "ours / peer", l.ours().id() + " vs " + l.peer().impl());
            n++;
        }
        JFreeChart chart = ChartFactory.createBarChart(title, null, "ours / peer = peer time / our time (log scale; right of 1: ours faster)",
                ds, PlotOrientation.HORIZONTAL, false, false, false);
        CategoryPlot plot = chart.getCategoryPlot();
        plot.setBackgroundPaint(Color.WHITE);
        plot.setRangeGridlinePaint(Color.LIGHT_GRAY);
        // ratios span 0.5x to 50x: a log axis with bars growing from 1, left (slower) or right (faster)
        LogAxis axis = new LogAxis(plot.getRangeAxis().getLabel());
        axis.setBase(10);
        axis.setSmallestValue(1e-3);
        double lo = 1, hi = 1;
        for (Compare.Line l : res.lines()) if (l.ratio() != null) {
            lo = Math.min(lo, l.ratio());
            hi = Math.max(hi, l.ratio());
        }
        axis.setRange(lo / 1.5, hi * 1.5);
        axis.setNumberFormatOverride(new java.text.DecimalFormat("0.##x"));
        plot.setRangeAxis(axis);
        BarRenderer bars = new BarRenderer() {
            @Override
            public java.awt.Paint getItemPaint(int row, int column) {
                Number v = ds.getValue(row, column);
                return v != null && v.doubleValue() >= 1 ? new Color(0x2E7D32) : new Color(0xE65100);
            }
        };
        bars.setBase(1.0);
        bars.setShadowVisible(false);
        bars.setBarPainter(new StandardBarPainter());
        plot.setRenderer(bars);
        plot.getDomainAxis().setMaximumCategoryLabelWidthRatio(0.45f);
        plot.addRangeMarker(new ValueMarker(1.0, Color.BLACK, new BasicStroke(1.5f)));
        Path abs = png.toAbsolutePath();
        if (abs.getParent() != null) Files.createDirectories(abs.getParent());
        Path tmp = abs.resolveSibling("." + abs.getFileName() + ".tmp");
        try {
            ChartUtils.saveChartAsPNG(tmp.toFile(), chart, 1000, Math.max(300, 120 + 24 * n));
            Files.move(tmp, abs, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException | RuntimeException | Error e) { // no empty .tmp left behind (the packed runtime lacked fonts)
            Files.deleteIfExists(tmp);
            throw e;
        }
    }
}
