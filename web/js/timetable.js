// Timetable (排课) page, served by `scheduler serve`: pick a region, solve it (a job with
// progress), look at the week per school, teacher or class, see unmet demand with its reasons,
// lock or move a lesson and re-solve around the locks, export iCalendar and CSV, and hand out
// each lesson's join links. Talks only to the scheduler's own /api.
//
// Query: region=ID, plan=ID, lang=en. Exposes window.timetable for tests.

import { makeT } from './i18n.js';

const t = makeT({
  'zh-CN': {
    title: '同步课堂 · 排课', switch: 'English', region: '区域', import: '导入区域文件（JSON）',
    limit: '求解时限（秒）', solve: '求解', plan: '方案', resolve: '保留锁定重新求解', validate: '校验',
    exports: '导出', ics: '当前课表 iCalendar', csv: '全部课程 CSV', csvUnmet: '未满足需求 CSV', view: '查看',
    bySchool: '按学校', byTeacher: '按教师', byClass: '按班级', moveTo: '移到', move: '移动', join: '进入链接',
    unmet: '未满足的需求', lock: '锁定', unlock: '解除锁定', locked: '已锁定', noRegions: '还没有区域：请导入区域文件',
    noPlan: '尚无方案：请先求解', coverage: '覆盖率', objective: '目标值', bound: '下界', gap: '差距',
    lessons: '课程数', solving: '求解中… {p}%', solved: '求解完成', failed: '求解失败：{why}', imported: '已导入区域 {name}',
    importFailed: '导入失败：{why}', valid: '校验通过：满足全部硬约束', invalid: '校验发现 {n} 处问题', period: '第{n}节',
    weekday: '周{d}', teacher: '教师', host: '主讲班级', receivers: '接收班级', room: '课堂', dedicated: '专递（无本地班级）',
    moved: '已移动并锁定', moveFailed: '不能移动：{why}', lockDone: '已更新锁定', linksFor: '{room} 的进入链接',
    noSecret: '排课服务未配置签名密钥，无法生成进入链接', classCol: '班级', subjectCol: '学科', periodsCol: '节数',
    reasonsCol: '原因', none: '无', origin: '来源',
    r_no_teacher: '没有能上这门课的中心校老师', r_no_common_window: '两校作息没有共同的上课时段',
    r_teacher_load: '老师课时已满', r_receiver_cap: '每节课接收班级已满', r_bandwidth: '网络带宽不足',
    r_server_capacity: '转发服务器容量不足', r_class_busy: '班级该时段已有课', r_once_per_day: '同一学科每天至多一节',
    r_one_teacher: '同一学科整学期须同一位老师', r_teacher_busy: '老师该时段已有课', r_time_limit: '求解时间不足',
  },
  en: {
    title: 'Live lessons · Timetable', switch: '中文', region: 'Region', import: 'Import a region file (JSON)',
    limit: 'Time limit (s)', solve: 'Solve', plan: 'Plan', resolve: 'Re-solve keeping locks', validate: 'Validate',
    exports: 'Exports', ics: 'This timetable (iCalendar)', csv: 'All lessons (CSV)', csvUnmet: 'Unmet demand (CSV)',
    view: 'View', bySchool: 'By school', byTeacher: 'By teacher', byClass: 'By class', moveTo: 'Move to', move: 'Move',
    join: 'Join links', unmet: 'Unmet demand', lock: 'Lock', unlock: 'Unlock', locked: 'locked',
    noRegions: 'No regions yet: import a region file', noPlan: 'No plan yet: solve first', coverage: 'Coverage',
    objective: 'Objective', bound: 'Bound', gap: 'Gap', lessons: 'Lessons', solving: 'Solving… {p}%', solved: 'Solved',
    failed: 'Solve failed: {why}', imported: 'Imported region {name}', importFailed: 'Import failed: {why}',
    valid: 'Valid: every hard rule holds', invalid: '{n} problems found', period: 'P{n}', weekday: 'Day {d}',
    teacher: 'Teacher', host: 'Host class', receivers: 'Receiving classes', room: 'Room', dedicated: 'dedicated (no host class)',
    moved: 'Moved and locked', moveFailed: 'Cannot move: {why}', lockDone: 'Locks updated', linksFor: 'Join links for {room}',
    noSecret: 'The scheduler has no signing secret: no join links', classCol: 'Class', subjectCol: 'Subject',
    periodsCol: 'Periods', reasonsCol: 'Reasons', none: 'none', origin: 'origin',
    r_no_teacher: 'no central teacher for this subject', r_no_common_window: 'no common period in the two bell schedules',
    r_teacher_load: 'teacher load full', r_receiver_cap: 'receivers per lesson full', r_bandwidth: 'not enough bandwidth',
    r_server_capacity: 'SFU capacity full', r_class_busy: 'class busy then', r_once_per_day: 'at most once a day',
    r_one_teacher: 'one teacher per subject for the term', r_teacher_busy: 'teacher busy then', r_time_limit: 'solver time limit',
  },
});

const WEEKDAYS_ZH = ['', '一', '二', '三', '四', '五', '六', '日'];
const $ = (id) => document.getElementById(id);
const q = new URLSearchParams(window.location.search);

const st = {
  regions: [],
  region: null, // id
  plans: [],
  plan: null, // id
  doc: null, // the plan JSON
  info: null, // plan info (locked, origin...)
  view: 'school',
  entity: null,
  selected: null, // lesson id
  job: null,
  lastError: null,
};

function esc(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

async function api(path, opts = {}) {
  const res = await fetch(`api/${path}`, { cache: 'no-store', ...opts });
  const text = await res.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = text;
  }
  if (!res.ok) {
    const err = new Error((body && body.error) || `HTTP ${res.status}`);
    err.status = res.status;
    err.body = body;
    throw err;
  }
  return body;
}

function status(text, bad = false) {
  const el = $('status');
  el.textContent = text;
  el.className = `health ${bad ? 'bad' : 'ok'}`;
}

function dayName(d) {
  return t.lang() === 'en' ? t('weekday', { d }) : t('weekday', { d: WEEKDAYS_ZH[d] || d });
}

// ------------------------------------------------------------- loading

async function loadRegions(select = null) {
  st.regions = await api('regions');
  const sel = $('region');
  sel.innerHTML = st.regions
    .map((r) => `<option value="${r.id}">${esc(r.name)} · v${r.version} (#${r.id})</option>`)
    .join('');
  if (st.regions.length === 0) {
    status(t('noRegions'));
    return;
  }
  const want = select ?? st.region ?? Number(q.get('region')) ?? null;
  st.region = st.regions.some((r) => r.id === want) ? want : st.regions[st.regions.length - 1].id;
  sel.value = String(st.region);
  await loadPlans();
}

async function loadPlans(select = null) {
  if (st.region == null) return;
  st.plans = await api(`regions/${st.region}/plans`);
  const sel = $('plan');
  sel.innerHTML = st.plans
    .slice()
    .reverse()
    .map((p) => `<option value="${p.id}">#${p.id} v${p.version} · ${esc(p.origin)} · ${(p.coverage * 100).toFixed(1)}%</option>`)
    .join('');
  if (st.plans.length === 0) {
    st.plan = null;
    st.doc = null;
    st.info = null;
    render();
    status(t('noPlan'));
    return;
  }
  const want = select ?? (st.plan && st.plans.some((p) => p.id === st.plan) ? st.plan : Number(q.get('plan')) || null);
  st.plan = st.plans.some((p) => p.id === want) ? want : st.plans[st.plans.length - 1].id;
  sel.value = String(st.plan);
  await loadPlan();
}

async function loadPlan() {
  const [doc, info] = await Promise.all([api(`plans/${st.plan}`), api(`plans/${st.plan}/info`)]);
  st.doc = doc;
  st.info = info;
  if (st.selected && !doc.lessons.some((l) => l.id === st.selected)) st.selected = null;
  fillEntities();
  render();
}

// ------------------------------------------------------------ the grid

/** (weekday, period) of `lesson` as seen by the current view's entity, or null. */
function placeOf(lesson) {
  const e = st.entity;
  if (st.view === 'school') {
    const s = lesson.slots.find((x) => x.school === e);
    return s ? { day: lesson.weekday, period: s.period, slot: s } : null;
  }
  if (st.view === 'teacher') {
    return lesson.teacher === e ? { day: lesson.weekday, period: lesson.slots[0].period, slot: lesson.slots[0] } : null;
  }
  if (lesson.host_class === e) return { day: lesson.weekday, period: lesson.slots[0].period, slot: lesson.slots[0] };
  const i = lesson.receivers.indexOf(e);
  return i >= 0 ? { day: lesson.weekday, period: lesson.slots[1 + i].period, slot: lesson.slots[1 + i] } : null;
}

function entities() {
  const set = new Set();
  for (const l of st.doc?.lessons || []) {
    if (st.view === 'school') l.slots.forEach((s) => set.add(s.school));
    else if (st.view === 'teacher') set.add(l.teacher);
    else {
      if (l.host_class) set.add(l.host_class);
      l.receivers.forEach((r) => set.add(r));
    }
  }
  return [...set].sort();
}

function fillEntities() {
  const list = entities();
  const sel = $('entity');
  sel.innerHTML = list.map((e) => `<option value="${esc(e)}">${esc(e)}</option>`).join('');
  if (!list.includes(st.entity)) st.entity = list[0] ?? null;
  if (st.entity != null) sel.value = st.entity;
}

function renderGrid() {
  const grid = $('grid');
  if (!st.doc || st.entity == null) {
    grid.innerHTML = '';
    return;
  }
  const placed = st.doc.lessons.map((l) => ({ l, p: placeOf(l) })).filter((x) => x.p);
  const days = [1, 2, 3, 4, 5];
  for (const { p } of placed) if (!days.includes(p.day)) days.push(p.day);
  days.sort();
  const maxPeriod = Math.max(6, ...placed.map((x) => x.p.period));
  const locked = new Set(st.info?.locked || []);
  let html = `<thead><tr><th></th>${days.map((d) => `<th>${esc(dayName(d))}</th>`).join('')}</tr></thead><tbody>`;
  for (let period = 1; period <= maxPeriod; period++) {
    html += `<tr><th>${esc(t('period', { n: period }))}</th>`;
    for (const d of days) {
      const here = placed.filter((x) => x.p.day === d && x.p.period === period);
      html += `<td data-day="${d}" data-period="${period}">`;
      for (const { l, p } of here) {
        const cls = ['tt-cell', locked.has(l.id) ? 'locked' : '', st.selected === l.id ? 'selected' : ''].join(' ');
        html += `<button type="button" class="${cls}" data-lesson="${esc(l.id)}">`
          + `<b>${esc(l.subject)}</b> <span>${esc(p.slot.start)}–${esc(p.slot.end)}</span>`
          + `<small>${esc(l.teacher)} → ${l.receivers.length}${locked.has(l.id) ? ` · ${esc(t('locked'))}` : ''}</small></button>`;
      }
      html += '</td>';
    }
    html += '</tr>';
  }
  grid.innerHTML = `${html}</tbody>`;
  grid.querySelectorAll('button[data-lesson]').forEach((b) => {
    b.addEventListener('click', () => select(b.dataset.lesson));
  });
}

function renderLesson() {
  const box = $('lesson');
  const l = st.doc?.lessons.find((x) => x.id === st.selected);
  box.hidden = !l;
  if (!l) return;
  const locked = (st.info?.locked || []).includes(l.id);
  $('lesson-title').textContent = `${l.id} · ${l.subject} · ${dayName(l.weekday)}`;
  const slots = l.slots.map((s) => `${esc(s.school)} ${esc(t('period', { n: s.period }))} ${esc(s.start)}–${esc(s.end)}`).join('；');
  $('lesson-detail').innerHTML = `<p>${esc(t('teacher'))}：${esc(l.teacher)} · ${esc(t('host'))}：${esc(l.host_class || t('dedicated'))}</p>`
    + `<p>${esc(t('receivers'))}：${esc(l.receivers.join('、'))}</p><p>${slots}</p>`
    + `<p>${esc(t('room'))}：<code>${esc(l.room)}</code></p>`;
  $('lock').textContent = locked ? t('unlock') : t('lock');
  const days = [1, 2, 3, 4, 5, 6, 7];
  const md = $('move-day');
  if (!md.options.length) {
    md.innerHTML = days.map((d) => `<option value="${d}">${esc(dayName(d))}</option>`).join('');
    $('move-period').innerHTML = Array.from({ length: 10 }, (_, i) => `<option value="${i + 1}">${esc(t('period', { n: i + 1 }))}</option>`).join('');
  }
  md.value = String(l.weekday);
  $('move-period').value = String(l.slots[0].period);
}

function renderUnmet() {
  const rows = st.doc?.unmet || [];
  $('unmet-count').textContent = st.doc ? `（${rows.reduce((n, u) => n + u.periods, 0)}）` : '';
  $('unmet').innerHTML = `<thead><tr><th>${esc(t('classCol'))}</th><th>${esc(t('subjectCol'))}</th>`
    + `<th>${esc(t('periodsCol'))}</th><th>${esc(t('reasonsCol'))}</th></tr></thead><tbody>`
    + rows.map((u) => `<tr data-class="${esc(u.point_class)}"><td>${esc(u.point_class)}</td><td>${esc(u.subject)}</td>`
      + `<td>${u.periods}</td><td>${esc(u.reasons.map((r) => t(`r_${r}`)).join('；') || t('none'))}</td></tr>`).join('')
    + '</tbody>';
}

function renderStats() {
  const s = st.doc?.stats;
  $('stats').innerHTML = s
    ? `<dt>${esc(t('coverage'))}</dt><dd id="coverage">${(s.coverage * 100).toFixed(2)}%</dd>`
      + `<dt>${esc(t('lessons'))}</dt><dd>${st.doc.lessons.length}</dd>`
      + `<dt>${esc(t('objective'))}</dt><dd>${s.objective}</dd>`
      + `<dt>${esc(t('bound'))}</dt><dd>${s.bound}</dd>`
      + `<dt>${esc(t('gap'))}</dt><dd>${(s.gap * 100).toFixed(2)}%</dd>`
      + `<dt>${esc(t('origin'))}</dt><dd>${esc(st.info?.origin || '')}</dd>`
    : '';
}

function renderExports() {
  const on = st.plan != null;
  const param = { school: 'school', teacher: 'teacher', class: 'class' }[st.view];
  $('ics').href = on && st.entity ? `api/plans/${st.plan}/ics?${param}=${encodeURIComponent(st.entity)}` : '#';
  $('csv').href = on ? `api/plans/${st.plan}/csv?table=lessons` : '#';
  $('csv-unmet').href = on ? `api/plans/${st.plan}/csv?table=unmet` : '#';
}

function render() {
  renderStats();
  renderGrid();
  renderLesson();
  renderUnmet();
  renderExports();
}

function select(id) {
  st.selected = st.selected === id ? null : id;
  $('lesson-msg').textContent = '';
  $('links').innerHTML = '';
  render();
}

// ---------------------------------------------------------------- jobs

async function runJob(start) {
  $('solve').disabled = true;
  $('resolve').disabled = true;
  const bar = $('progress');
  bar.hidden = false;
  bar.value = 0;
  try {
    let job = await start();
    st.job = job;
    while (job.state === 'queued' || job.state === 'running') {
      await new Promise((r) => setTimeout(r, 500));
      job = await api(`jobs/${job.job ?? job.id}`);
      st.job = job;
      bar.value = job.progress || 0;
      $('job').textContent = `${t('solving', { p: Math.round((job.progress || 0) * 100) })} ${job.message || ''}`;
    }
    if (job.state !== 'done') throw new Error(job.error || job.state);
    $('job').textContent = t('solved');
    status(t('solved'));
    await loadPlans(job.plan_id);
  } catch (e) {
    $('job').textContent = t('failed', { why: e.message });
    status(t('failed', { why: e.message }), true);
  } finally {
    bar.hidden = true;
    $('solve').disabled = false;
    $('resolve').disabled = false;
  }
}

function solve() {
  if (st.region == null) return Promise.resolve();
  const limit = Math.max(1, Math.min(600, Number($('limit').value) || 20));
  return runJob(() => api(`regions/${st.region}/solve`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ time_limit_s: limit }),
  }));
}

function resolve() {
  if (st.plan == null) return Promise.resolve();
  const limit = Math.max(1, Math.min(600, Number($('limit').value) || 20));
  return runJob(() => api(`plans/${st.plan}/resolve`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ time_limit_s: limit }),
  }));
}

// --------------------------------------------------------------- edits

async function toggleLock() {
  const id = st.selected;
  const locked = (st.info?.locked || []).includes(id);
  try {
    const r = await api(`plans/${st.plan}/lessons/${encodeURIComponent(id)}/${locked ? 'unlock' : 'lock'}`, { method: 'POST' });
    $('lesson-msg').textContent = t('lockDone');
    await loadPlans(r.plan);
  } catch (e) {
    $('lesson-msg').textContent = e.message;
  }
}

async function move(weekday, period) {
  const id = st.selected;
  try {
    const r = await api(`plans/${st.plan}/lessons/${encodeURIComponent(id)}/move`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ weekday, period }),
    });
    await loadPlans(r.plan);
    $('lesson-msg').textContent = t('moved');
    return { ok: true, plan: r.plan };
  } catch (e) {
    const broken = e.body && e.body.broken ? `：${e.body.broken.join('；')}` : '';
    $('lesson-msg').textContent = t('moveFailed', { why: e.message + broken });
    return { ok: false, status: e.status, error: e.message };
  }
}

async function joinLinks() {
  const id = st.selected;
  const list = $('links');
  try {
    const r = await api(`plans/${st.plan}/lessons/${encodeURIComponent(id)}/join`);
    $('lesson-msg').textContent = t('linksFor', { room: r.room });
    list.innerHTML = r.participants
      .map((p) => `<li><b>${esc(p.role)}</b> ${esc(p.sub)}：<a href="${esc(p.link)}" target="_blank" rel="noopener">${esc(p.link.split('?')[0])}</a></li>`)
      .join('');
    return r;
  } catch (e) {
    $('lesson-msg').textContent = e.status === 503 ? t('noSecret') : e.message;
    return null;
  }
}

async function validate() {
  if (st.plan == null) return null;
  const r = await api(`plans/${st.plan}/validate`);
  $('validation').textContent = r.ok ? t('valid') : `${t('invalid', { n: r.errors.length })}：${r.errors.slice(0, 5).join('；')}`;
  return r;
}

async function importRegion(file) {
  try {
    const text = await file.text();
    const r = await api('regions', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: text });
    status(t('imported', { name: r.name ?? r.id }));
    await loadRegions(r.id);
  } catch (e) {
    status(t('importFailed', { why: e.message }), true);
  }
}

// ---------------------------------------------------------------- wiring

$('region').addEventListener('change', (e) => {
  st.region = Number(e.target.value);
  st.plan = null;
  loadPlans().catch((err) => status(err.message, true));
});
$('plan').addEventListener('change', (e) => {
  st.plan = Number(e.target.value);
  loadPlan().catch((err) => status(err.message, true));
});
$('view').addEventListener('change', (e) => {
  st.view = e.target.value;
  fillEntities();
  render();
});
$('entity').addEventListener('change', (e) => {
  st.entity = e.target.value;
  render();
});
$('solve').addEventListener('click', () => solve());
$('resolve').addEventListener('click', () => resolve());
$('validate').addEventListener('click', () => validate().catch((e) => status(e.message, true)));
$('lock').addEventListener('click', () => toggleLock());
$('move').addEventListener('click', () => move(Number($('move-day').value), Number($('move-period').value)));
$('join').addEventListener('click', () => joinLinks());
$('import').addEventListener('change', (e) => {
  const f = e.target.files && e.target.files[0];
  if (f) importRegion(f);
});
$('lang-btn').addEventListener('click', () => {
  t.toggle();
  document.title = t('title');
  $('move-day').innerHTML = '';
  render();
});

window.timetable = {
  get state() {
    return { region: st.region, plan: st.plan, view: st.view, entity: st.entity, selected: st.selected, job: st.job };
  },
  get plan() {
    return st.doc;
  },
  get locked() {
    return st.info ? st.info.locked.slice() : [];
  },
  setView(view, entity) {
    st.view = view;
    $('view').value = view;
    fillEntities();
    if (entity != null) st.entity = entity;
    $('entity').value = st.entity;
    render();
  },
  select,
  solve,
  resolve,
  move,
  toggleLock,
  joinLinks,
  validate,
  reload: () => loadRegions(),
};

t.apply();
document.title = t('title');
loadRegions().catch((e) => status(e.message, true));
