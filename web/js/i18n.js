// Page text in Chinese (zh-CN, the default) or English. `?lang=en` or the switch button picks
// English; the choice is remembered in localStorage. Elements carry `data-i18n="key"` (text)
// or `data-i18n-title="key"` (tooltip).

const LANGS = ['zh-CN', 'en'];

export function currentLang() {
  const q = new URLSearchParams(window.location.search).get('lang');
  if (q) return q.startsWith('en') ? 'en' : 'zh-CN';
  try {
    const saved = localStorage.getItem('lang');
    if (LANGS.includes(saved)) return saved;
  } catch {
    // storage may be disabled
  }
  return 'zh-CN';
}

/** A translator over `dict` = { 'zh-CN': {key: text}, en: {key: text} }. */
export function makeT(dict) {
  let lang = currentLang();
  const t = (key, params = {}) => {
    const table = dict[lang] || dict['zh-CN'];
    let s = table[key] ?? dict['zh-CN'][key] ?? key;
    for (const [k, v] of Object.entries(params)) s = s.replaceAll(`{${k}}`, String(v));
    return s;
  };
  t.lang = () => lang;
  t.apply = (root = document) => {
    document.documentElement.lang = lang;
    root.querySelectorAll('[data-i18n]').forEach((el) => {
      el.textContent = t(el.dataset.i18n);
    });
    root.querySelectorAll('[data-i18n-title]').forEach((el) => {
      el.title = t(el.dataset.i18nTitle);
    });
  };
  t.toggle = () => {
    lang = lang === 'en' ? 'zh-CN' : 'en';
    try {
      localStorage.setItem('lang', lang);
    } catch {
      // not remembered; fine
    }
    t.apply();
  };
  return t;
}
