"""Short real-world texts, one per legacy encoding a document may arrive in.

Each is a few sentences of ordinary office prose in its language, as a user's notes file would
hold; ``ENCODED`` maps the encoding a Windows or Unix tool of that locale saves it in to the text.
"""

from __future__ import annotations

TRADITIONAL_CHINESE = (
    "這是一個繁體中文的測試文件。我們在台北的辦公室每週一早上開會，討論上週的銷售數字與"
    "下一季的計畫。請各部門在週五之前把報告寄給陳經理，並在會議中準備簡短的說明。"
    "如果有任何問題，歡迎隨時與我們聯絡。謝謝大家的合作！\n"
)
JAPANESE = (
    "これは日本語のテスト文書です。東京本社の会議は毎週月曜日の午前十時から始まります。"
    "各部署の担当者は、金曜日までに報告書を田中さんに提出してください。"
    "ご不明な点がございましたら、お気軽にお問い合わせください。よろしくお願いいたします。\n"
)
KOREAN = (
    "이 문서는 한국어 인코딩 시험용 문서입니다. 서울 사무실의 정기 회의는 매주 월요일 "
    "오전 열 시에 시작합니다. 각 부서는 금요일까지 보고서를 김 과장님께 보내 주시기 "
    "바랍니다. 궁금한 점이 있으시면 언제든지 연락해 주십시오. 감사합니다.\n"
)
RUSSIAN = (
    "Это тестовый документ на русском языке. Совещание в московском офисе проходит "
    "каждый понедельник в десять часов утра. Пожалуйста, отправьте отчёты Ивану Петровичу "
    "до пятницы и подготовьте краткое выступление. Если у вас есть вопросы, пишите нам.\n"
)
SIMPLIFIED_CHINESE = (
    "这是一份简体中文的测试文档。我们在北京的办公室每周一上午开会，讨论上周的销售数据和"
    "下一季度的计划。请各部门在周五之前把报告发给王经理，并在会议上准备简短的说明。"
    "如有任何问题，欢迎随时与我们联系。谢谢大家的配合！\n"
)

ENCODED = {
    "big5": TRADITIONAL_CHINESE,
    "shift_jis": JAPANESE,
    "euc_kr": KOREAN,
    "cp1251": RUSSIAN,
    "gb18030": SIMPLIFIED_CHINESE,
}
