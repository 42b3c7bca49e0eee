import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';

export interface Series {
  label: string;
  values: (number | null)[];
  color: string;
}

export interface Mark {
  t: number;
  label: string;
  kind: 'update' | 'rollback' | 'failure';
}

const MARK_COLORS: Record<Mark['kind'], string> = { update: '#2b6cb0', rollback: '#b7791f', failure: '#c53030' };

/**
 * One time chart drawn on a canvas by uPlot. The data is set in place on each update (no new chart),
 * so live figures cost one redraw. Update and rollback marks are vertical lines on the time axis.
 * For screen readers the chart is an image whose label says the latest value of each series.
 */
export function Chart({ title, unit, times, series, marks }: { title: string; unit: string; times: number[]; series: Series[]; marks: Mark[] }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot>();
  const marksRef = useRef(marks);
  marksRef.current = marks;
  const shape = series.map((s) => s.label).join('\u0000');

  useEffect(() => {
    const el = box.current!;
    const opts: uPlot.Options = {
      width: Math.max(el.clientWidth, 280),
      height: 180,
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true } },
      axes: [{ stroke: 'currentColor', grid: { stroke: 'rgba(128,128,128,.2)' } }, { stroke: 'currentColor', grid: { stroke: 'rgba(128,128,128,.2)' }, size: 50 }],
      series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 1.5, spanGaps: false, value: (_u: uPlot, v: number | null) => (v === null ? '—' : `${v} ${unit}`) }))],
      hooks: {
        draw: [
          (u) => {
            const ctx = u.ctx;
            ctx.save();
            for (const m of marksRef.current) {
              const x = u.valToPos(m.t / 1000, 'x', true);
              if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
              ctx.strokeStyle = MARK_COLORS[m.kind];
              ctx.lineWidth = 2;
              ctx.setLineDash([4, 3]);
              ctx.beginPath();
              ctx.moveTo(x, u.bbox.top);
              ctx.lineTo(x, u.bbox.top + u.bbox.height);
              ctx.stroke();
            }
            ctx.restore();
          },
        ],
      },
    };
    plot.current = new uPlot(opts, [times.map((t) => t / 1000), ...series.map((s) => s.values)] as uPlot.AlignedData, el);
    const resize = new ResizeObserver(() => plot.current?.setSize({ width: Math.max(el.clientWidth, 280), height: 180 }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = undefined;
    };
    // A new chart only when its series change; data changes are set below.
  }, [shape, unit]);

  useEffect(() => {
    plot.current?.setData([times.map((t) => t / 1000), ...series.map((s) => s.values)] as uPlot.AlignedData);
  }, [times, series, marks]);

  const peak = (v: (number | null)[]) => v.reduce<number | null>((m, x) => (x === null ? m : m === null || x > m ? x : m), null);
  const said = (v: number | null | undefined) => (v === null || v === undefined ? 'no data' : `${v} ${unit}`);
  const latest = series.map((s) => `${s.label} ${said(s.values.at(-1))} (peak ${said(peak(s.values))})`).join(', ');
  return (
    <figure class="chart">
      <figcaption>{title}</figcaption>
      <div ref={box} role="img" aria-label={`${title}: ${latest}; ${marks.length} update mark(s)`} />
    </figure>
  );
}
