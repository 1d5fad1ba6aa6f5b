"""Learn: six short lessons, each a few predict-then-reveal steps on a real sample model."""

import streamlit as st

from pruneviz.app.keys import LESSON_KEY, LESSON_PICKER_KEY
from pruneviz.app.lessons import LESSONS
from pruneviz.app.lessons.frame import done_lessons, go_further, reset
from pruneviz.i18n import _
from pruneviz.workflows.lessons import TEACHING_SAMPLE

keys = [lesson.key for lesson in LESSONS]
if LESSON_KEY not in st.session_state:
    # a link may open a lesson: ?lesson=2 (its number) or ?lesson=masking (its key)
    wanted = st.query_params.get("lesson", "")
    by_number = {str(n): key for n, key in enumerate(keys, start=1)}
    st.session_state[LESSON_KEY] = by_number.get(wanted, wanted if wanted in keys else keys[0])
st.session_state[LESSON_PICKER_KEY] = st.session_state[LESSON_KEY]


def choose() -> None:
    st.session_state[LESSON_KEY] = st.session_state[LESSON_PICKER_KEY]
    st.query_params["lesson"] = str(keys.index(st.session_state[LESSON_KEY]) + 1)


done = done_lessons()
st.title(_("Learn"))
head = st.columns([3, 1], vertical_alignment="bottom")
head[0].caption(_("Six short lessons. Each asks you to predict, then measures the real "
                  "model and shows what happened, and why."))
head[1].progress(len(done & set(keys)) / len(keys),
                 text=_("{done} of {total} lessons done").format(done=len(done & set(keys)),
                                                                 total=len(keys)))


def title_of(key: str) -> str:
    number = keys.index(key) + 1
    mark = " ✓" if key in done else ""
    return _("{number}. {title}").format(number=number,
                                         title=_(LESSONS[number - 1].title)) + mark


st.segmented_control(_("Lesson"), keys, format_func=title_of, key=LESSON_PICKER_KEY,
                     on_change=choose, label_visibility="collapsed", required=True)
lesson = LESSONS[keys.index(st.session_state[LESSON_KEY])]
number = keys.index(lesson.key) + 1
top = st.columns([4, 1.3], vertical_alignment="center")
top[0].subheader(_("Lesson {number}: {title}").format(number=number, title=_(lesson.title)))
top[1].button(_("Reset lesson"), icon=":material/restart_alt:", on_click=reset,
              args=(lesson.key,), key=f"pv_lesson_reset_{lesson.key}", width="stretch")
st.info(_(lesson.question), icon=":material/help:")
lesson.render()
st.divider()
end = st.columns(2)
with end[0]:
    go_further(lesson, TEACHING_SAMPLE)
if number < len(LESSONS):
    following = LESSONS[number]
    if end[1].button(_("Next: {title}").format(title=_(following.title)),
                     icon=":material/skip_next:", key="pv_lesson_next"):
        st.session_state[LESSON_KEY] = following.key
        st.query_params["lesson"] = str(number + 1)
        st.rerun()
