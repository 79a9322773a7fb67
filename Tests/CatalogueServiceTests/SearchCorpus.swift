import SmartSchoolModel

/// The search relevance set: 78 teaching topics across subjects and stages, each published as
/// four resources (a courseware, a lesson plan, a micro-lesson and an exercise set: 312
/// resources), and queries whose relevant results were judged by topic (and type), not by
/// text, so a query can only score by finding what a teacher would want.
enum SearchCorpus {
  struct Topic {
    var id: String
    var subject: Smartschool_Common_V1_Subject
    var grade: Int
    var name: String
    /// Three sub-topics: the lesson plan's, the micro-lesson's and the exercise set's.
    var aspects: [String]
    var summary: String
    var keywords: [String]
  }

  /// One resource of the set.
  struct Item {
    var topic: Topic
    var variant: Int
    var edition: String
    var title: String
    var description: String
    var keywords: [String]
    var type: Smartschool_Catalogue_V1_ResourceType
    var key: String { "\(topic.id)#\(variant)" }
  }

  static let topics: [Topic] = [
    // 数学
    .init(
      id: "frac-mean", subject: .mathematics, grade: 5, name: "分数的意义",
      aspects: ["分数的意义和单位", "真分数和假分数", "分数与除法的关系"],
      summary: "理解分数的意义，认识分数单位，会用分数表示图形的一部分", keywords: ["分数", "分数单位"]),
    .init(
      id: "frac-add", subject: .mathematics, grade: 5, name: "分数的加法和减法",
      aspects: ["同分母分数加减法", "异分母分数加减法", "分数加减混合运算"],
      summary: "掌握通分的方法，会计算异分母分数加减法", keywords: ["分数加减法", "通分"]),
    .init(
      id: "frac-mul", subject: .mathematics, grade: 6, name: "分数乘法",
      aspects: ["分数乘整数", "分数乘分数", "分数乘法应用题"],
      summary: "理解分数乘法的意义，会解决求一个数的几分之几是多少的问题", keywords: ["分数乘法"]),
    .init(
      id: "frac-div", subject: .mathematics, grade: 6, name: "分数除法",
      aspects: ["倒数的认识", "分数除法计算", "分数除法解决问题"],
      summary: "认识倒数，掌握分数除法的计算方法", keywords: ["分数除法", "倒数"]),
    .init(
      id: "percent", subject: .mathematics, grade: 6, name: "百分数",
      aspects: ["百分数的意义和写法", "百分数和分数小数的互化", "折扣和利率"],
      summary: "认识百分数，会进行百分数与小数的互化，解决折扣、利率等实际问题", keywords: ["百分数", "折扣"]),
    .init(
      id: "stats-sample", subject: .mathematics, grade: 7, name: "数据的收集、整理与描述",
      aspects: ["抽样调查：用部分数据估计总体", "统计调查", "直方图"],
      summary: "通过全面调查和抽样调查收集数据，学会用样本估计总体，绘制直方图", keywords: ["统计", "抽样调查"]),
    .init(
      id: "stats-avg", subject: .mathematics, grade: 8, name: "数据的分析",
      aspects: ["平均数与加权平均数", "中位数和众数", "方差"],
      summary: "理解平均数、中位数、众数和方差的意义，能根据部分数据的特征作出判断", keywords: ["数据分析", "方差"]),
    .init(
      id: "circle-know", subject: .mathematics, grade: 6, name: "圆的认识",
      aspects: ["认识圆心和半径", "用圆规画圆", "圆的对称性"],
      summary: "认识圆的各部分名称，知道同一个圆里半径都相等，会用圆规画圆", keywords: ["圆", "半径", "直径"]),
    .init(
      id: "circle-perim", subject: .mathematics, grade: 6, name: "圆的周长",
      aspects: ["圆周率的认识", "圆的周长公式", "圆的周长练习"],
      summary: "通过测量探索圆的周长与直径的关系，认识圆周率π", keywords: ["圆的周长", "圆周率"]),
    .init(
      id: "circle-area", subject: .mathematics, grade: 6, name: "圆的面积",
      aspects: ["圆的面积公式推导", "圆环的面积", "圆的面积计算"],
      summary: "把圆转化为近似长方形推导圆的面积公式，会计算圆和圆环的面积", keywords: ["圆的面积"]),
    .init(
      id: "circle-angle", subject: .mathematics, grade: 9, name: "圆周角",
      aspects: ["圆周角定理", "圆内接四边形", "圆周角与圆心角的关系"],
      summary: "探索圆周角与圆心角的关系，掌握圆周角定理及推论", keywords: ["圆周角", "圆心角"]),
    .init(
      id: "pythag", subject: .mathematics, grade: 8, name: "勾股定理",
      aspects: ["勾股定理的证明", "勾股定理的应用", "勾股定理的逆定理"],
      summary: "探索直角三角形三边的关系，用拼图法证明勾股定理，并解决实际问题", keywords: ["勾股定理", "直角三角形"]),
    .init(
      id: "quad-fn", subject: .mathematics, grade: 9, name: "二次函数",
      aspects: ["二次函数的图像和性质", "二次函数与一元二次方程", "实际问题与二次函数"],
      summary: "画出二次函数的图像，研究抛物线的开口方向、对称轴和顶点", keywords: ["二次函数", "抛物线"]),
    .init(
      id: "quad-eq", subject: .mathematics, grade: 9, name: "一元二次方程",
      aspects: ["配方法解一元二次方程", "公式法与因式分解法", "根与系数的关系"],
      summary: "掌握一元二次方程的解法，理解判别式与根的关系", keywords: ["一元二次方程", "配方法"]),
    .init(
      id: "linear-fn", subject: .mathematics, grade: 8, name: "一次函数",
      aspects: ["正比例函数", "一次函数的图像", "一次函数的应用"],
      summary: "理解一次函数的概念，会画一次函数的图像，用一次函数解决实际问题", keywords: ["一次函数", "正比例函数"]),
    .init(
      id: "rational", subject: .mathematics, grade: 7, name: "有理数",
      aspects: ["正数和负数", "数轴与绝对值", "有理数的加减法"],
      summary: "认识正数和负数，理解数轴、相反数和绝对值，掌握有理数的运算", keywords: ["有理数", "数轴"]),
    .init(
      id: "linear-eq", subject: .mathematics, grade: 7, name: "一元一次方程",
      aspects: ["解一元一次方程", "去括号与去分母", "实际问题与一元一次方程"],
      summary: "会解一元一次方程，能列方程解决行程、工程等实际问题", keywords: ["一元一次方程"]),
    .init(
      id: "congruent", subject: .mathematics, grade: 8, name: "全等三角形",
      aspects: ["全等三角形的判定", "角平分线的性质", "三角形全等的证明"],
      summary: "掌握SSS、SAS、ASA、AAS、HL判定方法，会证明三角形全等", keywords: ["全等三角形"]),
    .init(
      id: "similar", subject: .mathematics, grade: 9, name: "相似三角形",
      aspects: ["相似三角形的判定", "相似三角形的性质", "位似"],
      summary: "理解相似三角形的判定定理和性质，用相似解决测量问题", keywords: ["相似三角形"]),
    .init(
      id: "trig", subject: .mathematics, grade: 9, name: "锐角三角函数",
      aspects: ["正弦余弦和正切", "特殊角的三角函数值", "解直角三角形"],
      summary: "理解锐角三角函数的定义，会解直角三角形", keywords: ["三角函数", "解直角三角形"]),
    .init(
      id: "set", subject: .mathematics, grade: 10, name: "集合与函数概念",
      aspects: ["集合的含义与表示", "函数的概念", "函数的单调性"],
      summary: "理解集合的含义和基本运算，掌握函数的概念和单调性", keywords: ["集合", "函数"]),
    .init(
      id: "derivative", subject: .mathematics, grade: 11, name: "导数及其应用",
      aspects: ["导数的概念", "导数的计算", "利用导数研究函数的单调性"],
      summary: "理解导数的几何意义，会用导数求函数的单调区间和极值", keywords: ["导数"]),
    .init(
      id: "sequence", subject: .mathematics, grade: 11, name: "数列",
      aspects: ["等差数列", "等比数列", "数列求和"],
      summary: "掌握等差数列、等比数列的通项公式和前n项和公式", keywords: ["数列", "等差数列"]),
    .init(
      id: "times-table", subject: .mathematics, grade: 2, name: "表内乘法",
      aspects: ["乘法的初步认识", "九九乘法口诀", "用乘法解决问题"],
      summary: "认识乘法的含义，熟记九九乘法口诀", keywords: ["乘法口诀"]),
    .init(
      id: "decimal-mul", subject: .mathematics, grade: 5, name: "小数乘法",
      aspects: ["小数乘整数", "小数乘小数", "积的近似数"],
      summary: "掌握小数乘法的计算方法，会求积的近似数", keywords: ["小数乘法"]),
    .init(
      id: "cuboid", subject: .mathematics, grade: 5, name: "长方体和正方体",
      aspects: ["长方体的认识", "长方体和正方体的表面积", "长方体的体积"],
      summary: "认识长方体和正方体的特征，会计算表面积和体积", keywords: ["长方体", "体积"]),
    // 语文
    .init(
      id: "yuanmingyuan", subject: .chinese, grade: 5, name: "圆明园的毁灭",
      aspects: ["《圆明园的毁灭》课文解读", "圆明园的辉煌与毁灭", "勿忘国耻"],
      summary: "课文介绍圆明园昔日的辉煌和被英法联军毁灭的经过，激发学生热爱祖国的情感", keywords: ["圆明园", "爱国主义"]),
    .init(
      id: "beiying", subject: .chinese, grade: 8, name: "背影",
      aspects: ["朱自清《背影》", "《背影》中的父爱", "背影细节描写赏析"],
      summary: "学习朱自清散文中朴实的语言和细节描写，体会深沉的父爱", keywords: ["朱自清", "散文"]),
    .init(
      id: "yueyanglou", subject: .chinese, grade: 9, name: "岳阳楼记",
      aspects: ["范仲淹《岳阳楼记》", "先天下之忧而忧", "岳阳楼记文言翻译"],
      summary: "诵读课文，理解文言词语，体会作者的政治抱负", keywords: ["范仲淹", "文言文"]),
    .init(
      id: "taohuayuan", subject: .chinese, grade: 8, name: "桃花源记",
      aspects: ["陶渊明《桃花源记》", "桃花源记文言知识", "世外桃源的理想"],
      summary: "理解课文内容，积累文言词汇，体会作者对理想社会的追求", keywords: ["陶渊明", "文言文"]),
    .init(
      id: "jingyesi", subject: .chinese, grade: 1, name: "静夜思",
      aspects: ["李白《静夜思》", "古诗《静夜思》朗读", "床前明月光"],
      summary: "认识生字，有感情地朗读古诗，体会诗人的思乡之情", keywords: ["李白", "古诗"]),
    .init(
      id: "gushi", subject: .chinese, grade: 3, name: "古诗三首",
      aspects: ["古诗三首：山行", "古诗诵读与背诵", "古诗中的秋天"],
      summary: "朗读背诵古诗，想象诗中描绘的画面", keywords: ["古诗", "诵读"]),
    .init(
      id: "narrative", subject: .chinese, grade: 7, name: "记叙文写作",
      aspects: ["记叙文的六要素", "写人要抓住特点", "记叙文写作指导"],
      summary: "掌握记叙文的基本要素，学会选材和细节描写", keywords: ["作文", "记叙文"]),
    .init(
      id: "lunyu", subject: .chinese, grade: 7, name: "论语十二章",
      aspects: ["《论语》十二章", "学而时习之", "论语名句积累"],
      summary: "诵读《论语》名句，理解孔子关于学习和修身的思想", keywords: ["论语", "孔子"]),
    .init(
      id: "pinyin", subject: .chinese, grade: 1, name: "汉语拼音",
      aspects: ["声母和韵母", "拼音字母表", "整体认读音节"],
      summary: "学习声母、韵母和整体认读音节，能准确拼读音节", keywords: ["拼音"]),
    .init(
      id: "idioms", subject: .chinese, grade: 4, name: "成语故事",
      aspects: ["守株待兔", "画蛇添足", "成语故事积累"],
      summary: "阅读成语故事，理解成语含义，懂得其中的道理", keywords: ["成语"]),
    // 英语
    .init(
      id: "unit-classroom", subject: .english, grade: 4, name: "Unit 1 My classroom",
      aspects: [
        "Unit 1 My classroom 词汇", "Unit 1 My classroom Let's talk", "Unit 1 My classroom 课时",
      ],
      summary: "学习教室物品单词和 This is... 句型", keywords: ["Unit 1", "classroom"]),
    .init(
      id: "unit-pencil", subject: .english, grade: 7, name: "Unit 3 Is this your pencil?",
      aspects: ["Unit 3 Section A 对话", "Unit 3 语法：物主代词", "Unit 3 Section B 阅读"],
      summary: "学习文具类词汇，掌握物主代词和 Is this...? 句型", keywords: ["Unit 3", "物主代词"]),
    .init(
      id: "present-perfect", subject: .english, grade: 8, name: "现在完成时",
      aspects: ["现在完成时的构成", "现在完成时与一般过去时", "现在完成时专项"],
      summary: "掌握现在完成时的结构和用法，区分现在完成时和一般过去时", keywords: ["现在完成时", "语法"]),
    .init(
      id: "attributive", subject: .english, grade: 11, name: "定语从句",
      aspects: ["定语从句关系代词", "定语从句关系副词", "定语从句专项训练"],
      summary: "掌握关系代词和关系副词的用法", keywords: ["定语从句", "语法"]),
    .init(
      id: "reading", subject: .english, grade: 9, name: "英语阅读理解技巧",
      aspects: ["阅读理解主旨大意题", "阅读理解细节题", "阅读理解推理判断"],
      summary: "讲解中考英语阅读理解常见题型和解题技巧", keywords: ["阅读理解"]),
    .init(
      id: "passive", subject: .english, grade: 9, name: "被动语态",
      aspects: ["被动语态的构成", "含情态动词的被动语态", "被动语态专项"],
      summary: "掌握一般现在时和一般过去时的被动语态", keywords: ["被动语态"]),
    // 物理
    .init(
      id: "newton1", subject: .physics, grade: 8, name: "牛顿第一定律",
      aspects: ["牛顿第一定律与惯性", "惯性现象", "阻力对物体运动的影响"],
      summary: "通过实验探究阻力对物体运动的影响，理解惯性", keywords: ["牛顿第一定律", "惯性"]),
    .init(
      id: "ohm", subject: .physics, grade: 9, name: "欧姆定律",
      aspects: ["欧姆定律及其应用", "电阻的测量", "串并联电路中的欧姆定律"],
      summary: "探究电流与电压、电阻的关系，理解欧姆定律", keywords: ["欧姆定律", "电阻"]),
    .init(
      id: "buoyancy", subject: .physics, grade: 8, name: "浮力",
      aspects: ["阿基米德原理", "物体的浮沉条件", "浮力的计算"],
      summary: "认识浮力，探究浮力大小与哪些因素有关", keywords: ["浮力", "阿基米德原理"]),
    .init(
      id: "refraction", subject: .physics, grade: 8, name: "光的折射",
      aspects: ["光的折射规律", "透镜及其应用", "生活中的折射现象"],
      summary: "探究光的折射规律，解释生活中的折射现象", keywords: ["光的折射", "透镜"]),
    .init(
      id: "pressure", subject: .physics, grade: 8, name: "压强",
      aspects: ["固体压强", "液体压强", "大气压强"],
      summary: "理解压强的概念，探究液体压强的特点", keywords: ["压强"]),
    .init(
      id: "induction", subject: .physics, grade: 11, name: "电磁感应",
      aspects: ["法拉第电磁感应定律", "楞次定律", "电磁感应现象"],
      summary: "理解电磁感应现象，掌握楞次定律和法拉第电磁感应定律", keywords: ["电磁感应"]),
    .init(
      id: "motion", subject: .physics, grade: 10, name: "匀变速直线运动",
      aspects: ["速度与时间的关系", "自由落体运动", "位移与时间的关系"],
      summary: "掌握匀变速直线运动的规律", keywords: ["匀变速直线运动", "自由落体"]),
    .init(
      id: "sound", subject: .physics, grade: 8, name: "声现象",
      aspects: ["声音的产生与传播", "声音的特性", "噪声的危害和控制"],
      summary: "知道声音由振动产生，了解音调、响度和音色", keywords: ["声音", "噪声"]),
    // 化学
    .init(
      id: "oxygen", subject: .chemistry, grade: 9, name: "氧气",
      aspects: ["氧气的性质", "实验室制取氧气", "催化剂"],
      summary: "认识氧气的物理性质和化学性质，学习实验室制取氧气", keywords: ["氧气"]),
    .init(
      id: "conservation", subject: .chemistry, grade: 9, name: "质量守恒定律",
      aspects: ["质量守恒定律的探究", "化学方程式的书写", "利用化学方程式的简单计算"],
      summary: "通过实验探究质量守恒定律，正确书写化学方程式", keywords: ["质量守恒定律", "化学方程式"]),
    .init(
      id: "acid-base", subject: .chemistry, grade: 9, name: "酸和碱",
      aspects: ["常见的酸和碱", "酸和碱的中和反应", "溶液的酸碱度"],
      summary: "认识常见酸碱的性质，理解中和反应及pH", keywords: ["酸", "碱", "中和反应"]),
    .init(
      id: "changes", subject: .chemistry, grade: 9, name: "物质的变化和性质",
      aspects: ["物理变化和化学变化", "物理性质和化学性质", "物质变化的判断"],
      summary: "区分物理变化和化学变化，认识物质的性质", keywords: ["物理变化", "化学变化"]),
    .init(
      id: "periodic", subject: .chemistry, grade: 10, name: "元素周期律",
      aspects: ["元素周期表的结构", "元素周期律", "化学键"],
      summary: "认识元素周期表，理解元素性质的周期性变化", keywords: ["元素周期表"]),
    // 生物
    .init(
      id: "cell", subject: .biology, grade: 7, name: "细胞的基本结构",
      aspects: ["植物细胞", "动物细胞", "用显微镜观察细胞"],
      summary: "练习使用显微镜，观察并比较动植物细胞的结构", keywords: ["细胞", "显微镜"]),
    .init(
      id: "photosynthesis", subject: .biology, grade: 7, name: "光合作用",
      aspects: ["光合作用的原理", "绿叶在光下制造有机物", "光合作用和呼吸作用"],
      summary: "通过实验认识光合作用的条件、原料和产物", keywords: ["光合作用", "叶绿体"]),
    .init(
      id: "genetics", subject: .biology, grade: 8, name: "遗传与变异",
      aspects: ["基因控制生物的性状", "基因在亲子代间的传递", "生物的变异"],
      summary: "理解基因、DNA和染色体的关系，认识遗传和变异现象", keywords: ["遗传", "基因"]),
    .init(
      id: "ecosystem", subject: .biology, grade: 7, name: "生态系统",
      aspects: ["生态系统的组成", "食物链和食物网", "生物圈是最大的生态系统"],
      summary: "认识生态系统的组成和食物链，理解生态平衡", keywords: ["生态系统", "食物链"]),
    .init(
      id: "digestion", subject: .biology, grade: 7, name: "消化和吸收",
      aspects: ["食物的消化", "营养物质的吸收", "合理营养与食品安全"],
      summary: "了解消化系统的组成和食物的消化过程", keywords: ["消化", "吸收"]),
    // 历史
    .init(
      id: "opium", subject: .history, grade: 8, name: "鸦片战争",
      aspects: ["第一次鸦片战争", "南京条约", "林则徐虎门销烟"],
      summary: "了解鸦片战争的起因、经过和结果，认识南京条约的影响", keywords: ["鸦片战争", "近代史"]),
    .init(
      id: "xinhai", subject: .history, grade: 8, name: "辛亥革命",
      aspects: ["辛亥革命的经过", "中华民国的成立", "孙中山与三民主义"],
      summary: "了解辛亥革命的历史意义", keywords: ["辛亥革命", "孙中山"]),
    .init(
      id: "qin", subject: .history, grade: 7, name: "秦统一中国",
      aspects: ["秦始皇统一六国", "秦朝的中央集权制度", "统一文字和度量衡"],
      summary: "了解秦统一的过程和巩固统一的措施", keywords: ["秦朝", "秦始皇"]),
    .init(
      id: "silk-road", subject: .history, grade: 7, name: "丝绸之路",
      aspects: ["张骞通西域", "丝绸之路的开通", "海上丝绸之路"],
      summary: "了解张骞通西域和丝绸之路的历史作用", keywords: ["丝绸之路", "张骞"]),
    .init(
      id: "reform", subject: .history, grade: 8, name: "改革开放",
      aspects: ["十一届三中全会", "经济特区的建立", "改革开放的成就"],
      summary: "了解改革开放的伟大历程", keywords: ["改革开放"]),
    // 地理
    .init(
      id: "earth", subject: .geography, grade: 7, name: "地球的运动",
      aspects: ["地球的自转", "地球的公转", "昼夜交替和四季变化"],
      summary: "理解地球自转和公转产生的地理现象", keywords: ["地球自转", "公转"]),
    .init(
      id: "climate", subject: .geography, grade: 7, name: "世界的气候",
      aspects: ["气候类型的分布", "气温和降水", "影响气候的因素"],
      summary: "认识世界主要气候类型及分布", keywords: ["气候", "气温", "降水"]),
    .init(
      id: "rivers", subject: .geography, grade: 8, name: "中国的河流",
      aspects: ["长江", "黄河的治理", "中国的内流河与外流河"],
      summary: "了解长江和黄河的概况与开发治理", keywords: ["长江", "黄河"]),
    .init(
      id: "maps", subject: .geography, grade: 7, name: "地图",
      aspects: ["地图的三要素", "等高线地形图", "地图的选择和应用"],
      summary: "学会阅读地图，判读等高线地形图", keywords: ["地图", "等高线"]),
    // 科学
    .init(
      id: "water", subject: .science, grade: 3, name: "水的三态变化",
      aspects: ["水的蒸发", "水结冰了", "冰融化了"],
      summary: "观察水在不同温度下的状态变化", keywords: ["水", "蒸发", "凝固"]),
    .init(
      id: "circuit", subject: .science, grade: 4, name: "简单电路",
      aspects: ["点亮小灯泡", "电路的连接", "导体和绝缘体"],
      summary: "学会连接简单电路，认识导体和绝缘体", keywords: ["电路", "小灯泡"]),
    .init(
      id: "magnet", subject: .science, grade: 2, name: "磁铁",
      aspects: ["磁铁的两极", "磁铁能吸引什么", "指南针"],
      summary: "探究磁铁的性质，了解指南针的原理", keywords: ["磁铁", "指南针"]),
    // 信息技术
    .init(
      id: "computer", subject: .informationTechnology, grade: 3, name: "认识计算机",
      aspects: ["计算机的组成", "鼠标和键盘操作", "信息与信息技术"],
      summary: "认识计算机的硬件组成，学习鼠标和键盘的基本操作", keywords: ["计算机", "信息技术"]),
    .init(
      id: "scratch", subject: .informationTechnology, grade: 5, name: "Scratch编程入门",
      aspects: ["Scratch 角色与舞台", "Scratch 循环积木", "Scratch 小游戏制作"],
      summary: "用 Scratch 积木搭建程序，体验编程的乐趣", keywords: ["Scratch", "编程"]),
    .init(
      id: "python", subject: .informationTechnology, grade: 10, name: "Python程序设计",
      aspects: ["Python 循环语句", "Python 条件判断", "Python 列表与函数"],
      summary: "学习 Python 的基本语法，编写简单程序解决问题", keywords: ["Python", "编程"]),
    .init(
      id: "netsafe", subject: .informationTechnology, grade: 7, name: "网络安全",
      aspects: ["网络安全与个人隐私", "识别网络诈骗", "文明上网"],
      summary: "认识网络安全风险，养成安全上网的习惯", keywords: ["网络安全"]),
    .init(
      id: "ai", subject: .informationTechnology, grade: 11, name: "人工智能初步",
      aspects: ["人工智能的应用", "机器学习初探", "人工智能与社会"],
      summary: "了解人工智能的基本概念和典型应用", keywords: ["人工智能"]),
    // 道德与法治
    .init(
      id: "law", subject: .moralityAndLaw, grade: 8, name: "法律在我们身边",
      aspects: ["法律的特征", "依法行使权利", "做守法的公民"],
      summary: "了解法律的特征和作用，树立法治观念", keywords: ["法律", "法治"]),
  ]

  /// The edition a topic's courseware names in its title.
  static func edition(_ topic: Topic, _ index: Int) -> String {
    switch topic.subject {
    case .chinese, .history, .moralityAndLaw: "统编版"
    case .mathematics, .biology: index % 2 == 0 ? "人教版" : "北师大版"
    case .english: index % 2 == 0 ? "人教版" : "外研版"
    case .physics: index % 2 == 0 ? "人教版" : "沪科版"
    case .geography: index % 2 == 0 ? "湘教版" : "人教版"
    case .science: "教科版"
    case .informationTechnology: ""
    default: "人教版"
    }
  }

  static func gradeName(_ g: Int) -> String {
    let digits = ["一", "二", "三", "四", "五", "六", "七", "八", "九"]
    return g <= 9 ? digits[g - 1] + "年级" : "高" + digits[g - 10]
  }

  static let items: [Item] = topics.enumerated().flatMap { index, t -> [Item] in
    let edition = edition(t, index)
    let subject = t.subject.chineseName
    let ppt = index % 3 == 0 ? " PPT" : ""
    return [
      Item(
        topic: t, variant: 1, edition: edition,
        title: "\(edition)\(gradeName(t.grade))\(subject)《\(t.name)》课件\(ppt)",
        description: "\(t.summary)。课件共\(20 + index % 10)页，含情境导入、新知探究、课堂练习和小结。",
        keywords: t.keywords + ["课件"], type: .courseware),
      Item(
        topic: t, variant: 2, edition: edition, title: "\(t.aspects[0])教学设计",
        description: "本教学设计依据课程标准编写：\(t.summary)。包括教学目标、教学重难点、教学过程和板书设计。",
        keywords: t.keywords + ["教学设计"], type: .lessonPlan),
      Item(
        topic: t, variant: 3, edition: edition, title: "微课：\(t.aspects[1])",
        description: "时长\(5 + index % 6)分钟的微课视频，讲解\(t.aspects[1])。\(t.summary)。",
        keywords: t.keywords + ["微课"], type: .microLesson),
      Item(
        topic: t, variant: 4, edition: edition, title: "\(t.aspects[2])同步练习",
        description: "围绕\(t.aspects[2])精选基础题、提升题和拓展题，附参考答案。",
        keywords: t.keywords + ["习题"], type: .exerciseSet),
    ]
  }

  /// A judged query: the relevant results are the resources of `topics` (all of them when
  /// empty and `where` decides), narrowed by `where`, plus `also` (topic#variant keys).
  struct Judged {
    var group: String
    var query: String
    var topics: [String] = []
    var also: [String] = []
    /// Resources that share text with the query but not its meaning (部分数据 for 分数, 圆明园 for
    /// 圆, Unit for IT): none may rank above a relevant one.
    var distractors: [String] = []
    var `where`: (@Sendable (Item) -> Bool)? = nil

    func relevant(_ item: Item) -> Bool {
      if also.contains(item.key) { return true }
      if !topics.isEmpty && !topics.contains(item.topic.id) { return false }
      return `where`?(item) ?? !topics.isEmpty
    }
  }

  static let queries: [Judged] = [
    // Words as typed (no space, no particle).
    .init(group: "phrase", query: "勾股定理证明", topics: ["pythag"]),
    .init(group: "phrase", query: "二次函数图像", topics: ["quad-fn"]),
    .init(group: "phrase", query: "圆的面积公式", topics: ["circle-area"]),
    .init(group: "phrase", query: "牛顿第一定律惯性", topics: ["newton1"]),
    .init(group: "phrase", query: "光合作用呼吸作用", topics: ["photosynthesis"]),
    .init(group: "phrase", query: "电磁感应 楞次定律", topics: ["induction"]),
    .init(group: "phrase", query: "朱自清 背影", topics: ["beiying"]),
    .init(group: "phrase", query: "Python 循环", topics: ["python"]),
    // Topics by name.
    .init(group: "topic", query: "勾股定理", topics: ["pythag"]),
    .init(group: "topic", query: "欧姆定律", topics: ["ohm"]),
    .init(group: "topic", query: "鸦片战争", topics: ["opium"]),
    .init(group: "topic", query: "一元二次方程", topics: ["quad-eq"], also: ["quad-fn#3"]),
    .init(group: "topic", query: "定语从句", topics: ["attributive"]),
    .init(group: "topic", query: "丝绸之路", topics: ["silk-road"]),
    .init(group: "topic", query: "等高线", topics: ["maps"]),
    .init(group: "topic", query: "孙中山", topics: ["xinhai"]),
    .init(group: "topic", query: "惯性", topics: ["newton1"]),
    .init(group: "topic", query: "食物链", topics: ["ecosystem"]),
    .init(group: "topic", query: "乘法口诀", topics: ["times-table"]),
    .init(group: "topic", query: "导数", topics: ["derivative"]),
    .init(group: "topic", query: "物理变化", topics: ["changes"]),
    .init(group: "topic", query: "文言文", topics: ["yueyanglou", "taohuayuan"]),
    // One character missing, added or wrong.
    .init(group: "typo", query: "勾股定里", topics: ["pythag"]),
    .init(group: "typo", query: "欧姆定侓", topics: ["ohm"]),
    .init(group: "typo", query: "一元二次方城", topics: ["quad-eq"], also: ["quad-fn#3"]),
    .init(group: "typo", query: "质量守衡定律", topics: ["conservation"]),
    .init(group: "typo", query: "勾股理", topics: ["pythag"]),
    .init(group: "typo", query: "勾股定定理", topics: ["pythag"]),
    .init(group: "typo", query: "鸦片战征", topics: ["opium"]),
    .init(group: "typo", query: "光合合作用", topics: ["photosynthesis"]),
    // Full-width and traditional forms.
    .init(group: "width/traditional", query: "ＰＰＴ", where: { $0.title.hasSuffix(" PPT") }),
    .init(group: "width/traditional", query: "二次函數", topics: ["quad-fn"]),
    .init(group: "width/traditional", query: "勾股定理（證明）", topics: ["pythag"]),
    .init(group: "width/traditional", query: "歐姆定律", topics: ["ohm"]),
    .init(group: "width/traditional", query: "鴉片戰爭", topics: ["opium"]),
    .init(group: "width/traditional", query: "ＳＣＲＡＴＣＨ", topics: ["scratch"]),
    // Stage, grade, subject, type and edition words.
    .init(
      group: "facets", query: "八年级 数学",
      where: { $0.topic.grade == 8 && $0.topic.subject == .mathematics }),
    .init(
      group: "facets", query: "初中 物理",
      where: { (7...9).contains($0.topic.grade) && $0.topic.subject == .physics }),
    .init(
      group: "facets", query: "小学语文",
      where: { $0.topic.grade <= 6 && $0.topic.subject == .chinese }),
    .init(
      group: "facets", query: "七年级 生物",
      where: { $0.topic.grade == 7 && $0.topic.subject == .biology }),
    .init(
      group: "facets", query: "高中 化学",
      where: { $0.topic.grade >= 10 && $0.topic.subject == .chemistry }),
    .init(group: "facets", query: "勾股定理 教案", topics: ["pythag"], where: { $0.type == .lessonPlan }),
    .init(
      group: "facets", query: "光合作用 微课", topics: ["photosynthesis"],
      where: { $0.type == .microLesson }),
    .init(
      group: "facets", query: "二次函数教学设计", topics: ["quad-fn"],
      where: { $0.type == .lessonPlan }),
    .init(group: "facets", query: "欧姆定律习题", topics: ["ohm"], where: { $0.type == .exerciseSet }),
    .init(
      group: "facets", query: "人教版 数学",
      where: { $0.edition == "人教版" && $0.variant == 1 && $0.topic.subject == .mathematics }),
    .init(group: "facets", query: "微课", where: { $0.type == .microLesson }),
    // One character, a two-character word inside others, a Latin abbreviation.
    .init(
      group: "short", query: "分数",
      topics: ["frac-mean", "frac-add", "frac-mul", "frac-div", "percent"],
      distractors: ["stats-sample#2", "stats-avg#1", "stats-avg#2", "stats-avg#3"]),
    .init(
      group: "short", query: "圆",
      topics: ["circle-know", "circle-perim", "circle-area", "circle-angle"],
      distractors: ["yuanmingyuan#1", "yuanmingyuan#2", "yuanmingyuan#3", "yuanmingyuan#4"]),
    .init(group: "short", query: "诗", topics: ["jingyesi", "gushi"]),
    .init(
      group: "short", query: "IT", distractors: ["unit-classroom#1", "unit-pencil#1"],
      where: { $0.topic.subject == .informationTechnology }),
    .init(group: "short", query: "Unit 3", topics: ["unit-pencil"]),
  ]
}
